"""Each API process follows `crm_changes` so cache hits need no database round trip.

`ChangeListener` runs a thread with its own autocommit psycopg connection (`pg_listener.py`):
`LISTEN crm_changes`, then a catch-up in one snapshot (its `pg_snapshot_xmin` becomes the
coverage floor of the process's `RecentChanges`, and the change rows at or above it are loaded),
then every notification is recorded as it arrives. While the connection is down, memory covers
nothing and the cache routes fall back to the batched change-log query; the thread reconnects
with backoff and catches up again. Nothing is sent on this connection per request: only LISTEN
and the catch-up, once per connection.

`own_changes` is the read-your-writes half: inside a write's transaction it reads the change
rows that transaction produced, so the route can record them the moment it commits instead of
waiting for its own notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, text

from crm_pipeline.api.pg_listener import PgListener
from crm_pipeline.cache.recent_changes import Change, RecentChanges
from crm_pipeline.db.changelog import CHANNEL, ChangeNotice

log = logging.getLogger("crm_pipeline.api.changes")

APPLICATION_NAME = "crm-pipeline-api-changes"  # how the listener shows in pg_stat_activity
RETRY_SECONDS = 0.5  # first reconnect delay, doubled up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 10.0

# One statement, so one snapshot: the floor and the rows at or above it agree. The LEFT JOIN
# keeps one row (with NULLs) when there are none.
_CATCH_UP = """
WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS floor)
SELECT s.floor::text AS floor, c.entity, c.customer_id, c.op = 'truncate' AS all_customers,
       max(c.txid::text::numeric)::text AS txid
FROM s LEFT JOIN change_log c ON c.txid >= s.floor
GROUP BY s.floor, c.entity, c.customer_id, c.op = 'truncate'
"""

# The change rows of the current transaction (none when it wrote nothing: no txid assigned).
_OWN_CHANGES = text(
    "SELECT DISTINCT txid::text AS txid, entity, customer_id, op = 'truncate' AS all_customers"
    " FROM change_log WHERE txid = pg_current_xact_id_if_assigned()"
)


def own_changes(conn: Connection) -> list[Change]:
    """The changes the open transaction on `conn` has logged so far (call it just before the
    commit; record them with `RecentChanges.record_own` once it has succeeded)."""
    return [
        Change(int(r.txid), r.entity, r.customer_id, bool(r.all_customers))
        for r in conn.execute(_OWN_CHANGES)
    ]


class ChangeListener:
    """Feeds `recent` from `crm_changes` on a thread of its own (see the module docstring)."""

    def __init__(
        self,
        conninfo: Callable[[], str],
        recent: RecentChanges,
        *,
        retry_seconds: float = RETRY_SECONDS,
        max_retry_seconds: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.recent = recent
        self._listener = PgListener(
            CHANNEL,
            conninfo,
            name="crm-changes",
            application_name=APPLICATION_NAME,
            on_connect=self._catch_up,
            on_wake=self._record,
            # Notifications may have been missed from here on: never answer from memory.
            on_disconnect=self.recent.uncover,
            on_outage=_report_outage,
            on_recovery=_report_recovery,
            retry_seconds=retry_seconds,
            max_retry_seconds=max_retry_seconds,
        )

    @property
    def covering(self) -> bool:
        """True while memory may answer (connected and caught up)."""
        return self.recent.floor is not None

    @property
    def connections(self) -> int:
        """Successful catch-ups so far (tests and diagnostics)."""
        return self._listener.connections

    @property
    def retry_seconds(self) -> float:
        """The first reconnect delay (doubled while attempts fail)."""
        return self._listener.retry_seconds

    @retry_seconds.setter
    def retry_seconds(self, seconds: float) -> None:
        self._listener.retry_seconds = seconds

    def start(self, wait_seconds: float = 5.0) -> None:
        """Start the thread and wait (bounded) for its first catch-up or failure, so the first
        requests can already be answered from memory."""
        self._listener.start(wait_seconds)

    def stop(self) -> None:
        """Stop the thread (within about half a second) and stop answering from memory."""
        self._listener.stop()
        self.recent.uncover()

    def _catch_up(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(_CATCH_UP).fetchall()
        floor = int(rows[0][0])
        changes = [
            Change(int(txid), entity, customer_id, bool(all_customers))
            for _, entity, customer_id, all_customers, txid in rows
            if entity is not None
        ]
        self.recent.cover(floor, changes)

    def _record(self, conn: psycopg.Connection, notifies: list[psycopg.Notify]) -> None:
        for notify in notifies:
            notice = ChangeNotice.parse(notify.payload)
            if notice is not None:
                self.recent.record(
                    Change(notice.txid, notice.entity, notice.customer_id, notice.all_customers)
                )


def _report_outage(exc: Exception) -> None:
    log.warning(
        "change notifications unavailable (%s); cache hits ask the database", type(exc).__name__
    )


def _report_recovery() -> None:
    log.info("change notifications resumed; cache hits answered in memory")
