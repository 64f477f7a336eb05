"""Webhook inbox processing: leadgen events stored by the API become enriched `leads` rows.

The webhook handler only stores Meta's notification (ids, no answers) and acknowledges. Here a
batch of pending leadgen rows is claimed, each is enriched with `GET /{leadgen_id}` (the lead's
field_data), and then, in one short transaction, the leads are upserted, linked to customers and
their inbox rows marked; the `leads` change rows that result drive the change-log sensor's
customer 360 rebuilds.

No transaction is open while Graph is called. Change-log readers only take change rows below
`pg_snapshot_xmin(pg_current_snapshot())` (invariant 1 in docs/architecture.md), so any
transaction left open across a throttled or slow Graph call would hold that watermark back and
stall every cache rebuild, from every writer, for as long as the call takes.
"""

import json
import time
from collections.abc import Sequence
from typing import NamedTuple

import dagster as dg
import orjson
from facebook_business.adobjects.lead import Lead
from sqlalchemy import Connection, Engine, text

from crm_pipeline.config import load_settings
from crm_pipeline.db import schema
from crm_pipeline.db.crm_core import link_leads_to_customers
from crm_pipeline.db.privacy.identifiers import ErasedIdentifiers
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs import groups
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource
from crm_pipeline.facebook.error_kinds import TOKEN_CODES
from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded
from crm_pipeline.facebook.fields import LEAD_FIELDS
from crm_pipeline.facebook.transforms import flatten_lead

INBOX_SENSOR_INTERVAL_SECONDS = load_settings().sensors.inbox_interval_seconds
# Rows left unprocessed by a transient Graph error are retried at most this often.
RETRY_AFTER_SECONDS = load_settings().sensors.inbox_retry_seconds
_MAX_ERROR_CHARS = 500


class WebhookLeadsConfig(dg.Config):
    """How many inbox rows one run processes (the sensor requests another run for the rest)."""

    batch_size: int = 500


# Claiming a row = holding a session-level advisory lock on it, (_LOCK_SPACE, id mod 2^31), on a
# connection in autocommit mode for the whole run, released only after the second transaction
# has committed the row's outcome.
#
# Why not a lease column: there is none (no claimed_at), and overloading `error` with a lease
# would mix claims with real failures. Why not FOR UPDATE SKIP LOCKED alone: its row locks last
# only as long as the transaction, so it would have to stay open across the Graph calls, which is
# what this module must avoid. A session advisory lock outlives the short statement that takes
# it, and a session with no transaction open neither holds an xid nor a snapshot, so it does not
# hold back `pg_snapshot_xmin`. If the process dies, PostgreSQL ends the session and the locks go
# with it: the rows are simply pending again. Advisory locks belong to one database, so other
# databases on the server do not collide. (It needs a real session: behind a pooler in
# transaction mode, such as PgBouncer's, the locks would land on a shared server connection.)
#
# Two concurrent runs therefore never enrich the same row: `pg_try_advisory_lock` is evaluated
# row by row above the OFFSET 0 fence, so the LIMIT stops at `limit` rows this run locked, and
# rows another run holds are skipped (this run takes the next pending ones). Duplicates would
# not corrupt data (the upsert is on the leadgen id), but they would spend Graph rate limit
# twice and race two transactions creating the same customer. A collision of two ids 2^31
# apart only makes one of them wait for a later run.
_LOCK_SPACE = 0x1EAD  # "lead": the first key of this module's advisory locks
# Pending leadgen rows; rejected rows also have processed_at set, the explicit test keeps them
# out even if a future writer sets only rejected_at.
_PENDING_LEADGEN = "source = 'leadgen' AND processed_at IS NULL AND rejected_at IS NULL"
_CLAIM = f"""
SELECT pending.id FROM (
    SELECT id FROM webhook_inbox WHERE {_PENDING_LEADGEN} ORDER BY id OFFSET 0
) AS pending
WHERE pg_try_advisory_lock({_LOCK_SPACE}, (pending.id % 2147483648)::int)
LIMIT :limit
"""
# The claim's snapshot predates its locks: a row another run finished (committed, then
# unlocked) in between looked pending to it. Read the claimed rows again, in a new snapshot.
_CLAIMED = f"""
SELECT id, event_key, payload FROM webhook_inbox
WHERE id = ANY(:ids) AND {_PENDING_LEADGEN}
ORDER BY id
"""


class _InboxRow(NamedTuple):
    id: int
    event_key: str
    payload: dict


def _claim(lease: Connection, batch_size: int) -> list[_InboxRow]:
    """Lock up to `batch_size` pending leadgen rows for this session (each statement commits)."""
    ids = lease.execute(text(_CLAIM), {"limit": batch_size}).scalars().all()
    if not ids:
        return []
    rows = lease.execute(text(_CLAIMED), {"ids": list(ids)}).all()
    return [
        _InboxRow(
            row.id,
            row.event_key,
            row.payload if isinstance(row.payload, dict) else json.loads(row.payload),
        )
        for row in rows
    ]


def _release(lease: Connection, log=None) -> None:
    """Drop this session's advisory locks (the lease connection is ours alone for the run).

    A session-level lock survives the rollback of the statement that took it, so this also
    covers a claim that failed half-way. When even this fails, the connection is invalidated:
    closing the session releases its locks server-side.
    """
    try:
        lease.execute(text("SELECT pg_advisory_unlock_all()"))
    except Exception as exc:  # whatever went wrong: drop the session, and its locks with it
        if log:
            log.warning(f"could not release inbox claims ({type(exc).__name__}); reconnecting")
        lease.invalidate()


def _lead_row(event: dict, fetched: dict) -> dict:
    """The `leads` row for one event: Graph's answer, with the webhook's ids as fallback."""
    field_data = fetched.get("field_data")
    raw = {
        "id": str(fetched.get("id") or event["leadgen_id"]),
        "form_id": fetched.get("form_id") or event.get("form_id"),
        "ad_id": fetched.get("ad_id") or event.get("ad_id"),
        "campaign_id": fetched.get("campaign_id"),
        "page_id": event.get("page_id"),
        "created_time": fetched.get("created_time"),
        "field_data": orjson.dumps(field_data).decode() if field_data is not None else None,
    }
    row = flatten_lead(raw)
    for key in ("form_id", "ad_id", "campaign_id", "page_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


class _Enriched(NamedTuple):
    rows: list[dict]  # `leads` rows
    done: list[int]  # inbox ids enriched
    failed: list[tuple[int, str]]  # permanent errors: kept for inspection, not retried
    retry: list[tuple[int, str]]  # transient errors: retried by a later run
    deferred: int  # not attempted (the run's wait budget ran out): pending for a later run


def _enrich(claimed: Sequence[_InboxRow], client, log=None) -> _Enriched:
    """GET each claimed lead. Called with no transaction open: calls may wait on rate limits."""
    rows, done, failed, retry = [], [], [], []
    for position, (inbox_id, key, payload) in enumerate(claimed):
        event = dict(payload)
        event.setdefault("leadgen_id", key)
        try:
            fetched = client.request(
                lambda lid=key: Lead(lid, api=client.api).api_get(fields=list(LEAD_FIELDS))
            ).export_all_data()
        except GraphApiError as exc:
            if exc.code in TOKEN_CODES:
                raise  # an invalid token fails the run with a clear message
            message = str(exc)[:_MAX_ERROR_CHARS]
            if isinstance(exc, RateLimitBudgetExceeded):
                # Meta throttles us for longer than this run may wait: a later run retries this
                # row, and the rest stay pending untouched instead of each meeting the throttle.
                retry.append((inbox_id, message))
                if log:
                    log.warning(f"lead {key}: throttled past the run's wait budget: {exc}")
                return _Enriched(rows, done, failed, retry, len(claimed) - position - 1)
            (retry if exc.retryable else failed).append((inbox_id, message))
            if log:
                log.warning(f"lead {key}: {'will retry' if exc.retryable else 'gave up'}: {exc}")
            continue
        rows.append(_lead_row(event, fetched))
        done.append(inbox_id)
    return _Enriched(rows, done, failed, retry, 0)


def _record(conn: Connection, enriched: _Enriched) -> dict[str, int]:
    """Upsert and link the leads and mark their inbox rows, inside `conn`'s transaction.

    A lead of an erased person is dropped, and its inbox event deleted (invariant 12).
    """
    erased = ErasedIdentifiers.load(conn)
    gone = [i for i, row in zip(enriched.done, enriched.rows, strict=True) if erased.matches(row)]
    if gone:
        conn.execute(text("DELETE FROM webhook_inbox WHERE id = ANY(:ids)"), {"ids": gone})
    pairs = [(i, r) for i, r in zip(enriched.done, enriched.rows, strict=True) if i not in gone]
    rows, done = [r for _, r in pairs], [i for i, _ in pairs]
    result = bulk_upsert(conn, schema.leads, rows)
    lead_ids = [row["id"] for row in rows]
    linked = link_leads_to_customers(conn, lead_ids) if lead_ids else {}
    if done:
        conn.execute(
            text(
                "UPDATE webhook_inbox SET processed_at = now(), error = NULL WHERE id = ANY(:ids)"
            ),
            {"ids": done},
        )
    for inbox_id, message in enriched.failed:  # permanent: keep the row, stop retrying
        conn.execute(
            text("UPDATE webhook_inbox SET processed_at = now(), error = :e WHERE id = :id"),
            {"id": inbox_id, "e": message},
        )
    for inbox_id, message in enriched.retry:
        conn.execute(
            text("UPDATE webhook_inbox SET error = :e WHERE id = :id"),
            {"id": inbox_id, "e": message},
        )
    return {
        "inserted": result.inserted,
        "updated": result.updated,
        "dropped_erased": len(gone),
        **linked,
    }


def process_inbox(engine: Engine, client, batch_size: int, log=None) -> dict[str, int]:
    """Claim, enrich and record one batch of leadgen inbox rows.

    Claim: two autocommit statements take advisory locks and read the rows (see `_CLAIM`).
    Enrich: the Graph calls, with no transaction open. Record: one short transaction upserts,
    links and marks. The claims are released once the record has committed (or failed).
    """
    lease = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        claimed = _claim(lease, batch_size)
        enriched = _enrich(claimed, client, log)
        recorded = {"inserted": 0, "updated": 0, "dropped_erased": 0}
        if claimed:
            with engine.begin() as conn:
                recorded = _record(conn, enriched)
    finally:
        _release(lease, log)
        lease.close()
    return {
        "claimed": len(claimed),
        "processed": len(enriched.done),
        "failed": len(enriched.failed),
        "retry_later": len(enriched.retry) + enriched.deferred,
        **recorded,
    }


@dg.asset(
    deps=["leads"],
    group_name=groups.FACEBOOK,
    kinds={"postgres", "facebook"},
    owners=["team:crm"],
    description=(
        "Leadgen webhook events from `webhook_inbox`, enriched with GET /{leadgen_id} and upserted "
        "into `leads` (linked to customers); each inbox row is marked processed. Requested by "
        "webhook_inbox_sensor whenever unprocessed rows exist."
    ),
)
def webhook_leads(
    context: dg.AssetExecutionContext,
    config: WebhookLeadsConfig,
    postgres: PostgresResource,
    graph_api: GraphApiResource,
) -> dg.MaterializeResult:
    """Process one batch of the leadgen inbox."""
    with graph_api.session() as graph:
        counts = process_inbox(postgres.engine(), graph.client, config.batch_size, context.log)
    context.log.info(f"webhook inbox: {counts}")
    return dg.MaterializeResult(metadata=counts)


_PENDING = f"""
SELECT count(*) AS pending, max(id) AS max_id FROM webhook_inbox WHERE {_PENDING_LEADGEN}
"""


@dg.sensor(
    asset_selection=[webhook_leads],
    minimum_interval_seconds=INBOX_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests webhook_leads when leadgen webhook events wait unprocessed in webhook_inbox; "
        "rows left by a transient Graph error are retried after CRM_INBOX_RETRY_SECONDS."
    ),
)
def webhook_inbox_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """One run per tick while new events arrive; a retry run now and then for leftovers."""
    cursor = json.loads(context.cursor) if context.cursor else {"max_id": 0, "at": 0.0}
    with postgres.engine().connect() as conn:
        pending, max_id = conn.execute(text(_PENDING)).one()
    if not pending:
        return dg.SkipReason("no unprocessed leadgen events")
    now = time.time()
    if max_id <= cursor["max_id"] and now - cursor["at"] < RETRY_AFTER_SECONDS:
        return dg.SkipReason(f"{pending} event(s) already requested; retrying later")
    context.update_cursor(json.dumps({"max_id": max_id, "at": now}))
    return dg.RunRequest(run_key=f"webhook-inbox-{max_id}-{int(now)}")
