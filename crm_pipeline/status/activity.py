"""The status of what keeps the data moving: the cache worker, the syncs, the webhook inbox.

All read from the same database snapshot as the cache files' lag; ages are computed by the
database clock (as the sensor and the worker compute them), so hosts with skewed clocks agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from crm_pipeline.cache.registry import SOURCE_TABLES
from crm_pipeline.db.worker_state import read_worker_state
from crm_pipeline.lake.layout import PART_FILE, RAW, SYNC_KEY, sync_time
from crm_pipeline.status.cache_state import iso
from crm_pipeline.status.database import Problem, problem

# The checkpoint `crm-pipeline sync facebook` keeps while it runs (orchestrate.CHECKPOINT_STREAM,
# named here so the status never imports the Dagster definitions; a test keeps them equal): a
# row left behind is a sync that stopped before its end.
INTERRUPTED_SYNC_STREAM = "cli_insights_sync"
# Rejected webhook events stay in the inbox for CRM_INBOX_RETENTION_DAYS; only recent ones fail
# the probe, so one malformed delivery does not keep it red for a month.
REJECTED_RECENT_HOURS = 24

_WORKER_LAG = text(
    "SELECT count(*) AS changes, extract(epoch FROM now() - min(changed_at)) AS oldest_age"
    " FROM change_log WHERE txid < pg_snapshot_xmin(pg_current_snapshot())"
    "   AND entity = ANY(CAST(:entities AS text[]))"
    "   AND (CAST(:watermark AS xid8) IS NULL OR txid >= CAST(:watermark AS xid8))"
)
_INSIGHTS = text(
    "SELECT account_id, max(synced_at) AS last_synced_at, max(date) AS newest_date"
    " FROM ad_insights_daily GROUP BY account_id ORDER BY account_id"
)
_SYNC_STATE = text("SELECT stream, scope, state, updated_at FROM sync_state ORDER BY stream, scope")
_INBOX = text(
    "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
    " min(received_at) FILTER (WHERE status = 'pending') AS oldest_pending_at,"
    " count(*) FILTER (WHERE status = 'rejected') AS rejected,"
    " count(*) FILTER (WHERE status = 'rejected'"
    "   AND rejected_at > now() - make_interval(hours => :hours)) AS rejected_recent,"
    " max(rejected_at) AS newest_rejected_at"
    " FROM webhook_inbox"
)


def worker_section(conn: Connection, name: str, stale_after: float) -> dict[str, Any]:
    """The worker's heartbeat and how many finished changes its watermark has not covered."""
    state = read_worker_state(conn, name)
    watermark = state.watermark if state else None
    lag = conn.execute(_WORKER_LAG, {"entities": list(SOURCE_TABLES), "watermark": watermark}).one()
    return {
        "name": name,
        "seen": state is not None,
        "alive": state.alive(stale_after) if state else False,
        "heartbeat_age_seconds": round(state.heartbeat_age_seconds, 1) if state else None,
        "stale_after_seconds": stale_after,
        "host": state.host if state else None,
        "pid": state.pid if state else None,
        "watermark": watermark,
        "lag_changes": lag.changes,
        "lag_seconds": round(float(lag.oldest_age), 1) if lag.oldest_age is not None else 0.0,
    }


def worker_problems(worker: dict[str, Any], cache_files: list[dict[str, Any]]) -> list[Problem]:
    """A problem when the worker is absent or silent while some cache file is behind."""
    behind = [f["path"] for f in cache_files if f.get("behind")]
    if worker["alive"] or not behind:
        return []
    seen = (
        f"last heartbeat {worker['heartbeat_age_seconds']}s ago (stale after "
        f"{worker['stale_after_seconds']}s, CRM_CACHE_WORKER_STALE_SECONDS)"
        if worker["seen"]
        else "never ran"
    )
    return [
        problem(
            "cache_worker_down",
            f"cache worker {worker['name']!r} {seen} while changes are pending for "
            f"{', '.join(behind)}",
        )
    ]


def sync_section(conn: Connection, data_dir: Path) -> dict[str, Any]:
    """The last load of each ad account's insights, each stream's watermark, interrupted CLI
    syncs, and the newest raw landing of each stream on this machine."""
    insights = [
        {
            "account_id": row.account_id,
            "last_synced_at": iso(row.last_synced_at),
            "newest_date": row.newest_date.isoformat() if row.newest_date else None,
        }
        for row in conn.execute(_INSIGHTS)
    ]
    streams, interrupted = [], []
    for row in conn.execute(_SYNC_STATE):
        if row.stream == INTERRUPTED_SYNC_STREAM:
            done = len((row.state or {}).get("done", []))
            interrupted.append(
                {"scope": row.scope, "updated_at": iso(row.updated_at), "done": done}
            )
        elif row.state:  # a row without state (the demo database's mark) is no sync
            streams.append(
                {
                    "stream": row.stream,
                    "scope": row.scope,
                    "state": row.state,
                    "updated_at": iso(row.updated_at),
                }
            )
    return {
        "insights": insights,
        "streams": streams,
        "interrupted_cli_syncs": interrupted,
        "raw_landings": raw_landings(data_dir),
    }


def raw_landings(data_dir: Path) -> list[dict[str, Any]]:
    """The newest complete `synced_at=` landing of each raw stream under `CRM_DATA_DIR/raw`
    (read only: the status moves nothing, unlike the loads' first read)."""
    root = Path(data_dir) / RAW
    if not root.is_dir():
        return []
    found = []
    for stream in sorted(p for p in root.iterdir() if p.is_dir()):
        stamps = [sync_time(part.parent.name) for part in stream.glob(f"{SYNC_KEY}=*/{PART_FILE}")]
        newest = max((s for s in stamps if s is not None), default=None)
        if newest is not None:
            found.append({"stream": stream.name, "last_landed_at": iso(newest)})
    return found


def webhooks_section(conn: Connection) -> dict[str, Any]:
    """Webhook events waiting for processing, and rejected ones (all, and recent)."""
    row = conn.execute(_INBOX, {"hours": REJECTED_RECENT_HOURS}).one()
    return {
        "pending": row.pending,
        "oldest_pending_at": iso(row.oldest_pending_at),
        "rejected": row.rejected,
        "rejected_recent": row.rejected_recent,
        "recent_hours": REJECTED_RECENT_HOURS,
        "newest_rejected_at": iso(row.newest_rejected_at),
    }


def webhook_problems(webhooks: dict[str, Any]) -> list[Problem]:
    """A problem when webhook events were rejected within the recent window."""
    if not webhooks["rejected_recent"]:
        return []
    return [
        problem(
            "webhook_events_rejected",
            f"{webhooks['rejected_recent']} webhook event(s) rejected in the last "
            f"{REJECTED_RECENT_HOURS} h (newest {webhooks['newest_rejected_at']}): see "
            "webhook_inbox.error where status = 'rejected'",
        )
    ]
