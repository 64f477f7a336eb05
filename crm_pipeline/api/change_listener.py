"""Each API process follows `crm_changes` so cache hits need no database round trip.

`ChangeListener` runs a thread with its own autocommit psycopg connection: `LISTEN crm_changes`,
then a catch-up in one snapshot (its `pg_snapshot_xmin` becomes the coverage floor of the
process's `RecentChanges`, and the change rows at or above it are loaded), then every
notification is recorded as it arrives. While the connection is down, memory covers nothing and
the cache routes fall back to the batched change-log query; the thread reconnects with backoff
and catches up again. Nothing is sent on this connection per request: only LISTEN and the
catch-up, once per connection.

`own_changes` is the read-your-writes half: inside a write's transaction it reads the change
rows that transaction produced, so the route can record them the moment it commits instead of
waiting for its own notification.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, text

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
        self._conninfo = conninfo
        self.recent = recent
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.connections = 0  # successful catch-ups so far (tests and diagnostics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_attempt = threading.Event()

    @property
    def covering(self) -> bool:
        """True while memory may answer (connected and caught up)."""
        return self.recent.floor is not None

    def start(self, wait_seconds: float = 5.0) -> None:
        """Start the thread and wait (bounded) for its first catch-up or failure, so the first
        requests can already be answered from memory."""
        self._thread = threading.Thread(target=self._run, name="crm-changes", daemon=True)
        self._thread.start()
        self._first_attempt.wait(wait_seconds)

    def stop(self) -> None:
        """Stop the thread (within about half a second) and stop answering from memory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.recent.uncover()

    def _run(self) -> None:
        delay: float | None = None  # None: the next failure is the first of an outage
        reported = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo(),
                    autocommit=True,
                    connect_timeout=3,
                    application_name=APPLICATION_NAME,
                    # A peer that vanished without closing (TCP only) is noticed in seconds.
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=2,
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")  # autocommit: in effect from here on
                    self._catch_up(conn)
                    self.connections += 1
                    if reported:
                        log.info("change notifications resumed; cache hits answered in memory")
                    reported = False
                    delay = None
                    self._first_attempt.set()
                    self._listen(conn)
            except Exception as exc:  # unreachable database, dropped connection, ...
                if not reported:
                    log.warning(
                        "change notifications unavailable (%s); cache hits ask the database",
                        type(exc).__name__,
                    )
                    reported = True
            finally:
                # Notifications may have been missed from here on: never answer from memory.
                self.recent.uncover()
            self._first_attempt.set()
            delay = self.retry_seconds if delay is None else min(delay * 2, self.max_retry_seconds)
            self._stop.wait(delay)

    def _catch_up(self, conn: psycopg.Connection) -> None:
        rows = conn.execute(_CATCH_UP).fetchall()
        floor = int(rows[0][0])
        changes = [
            Change(int(txid), entity, customer_id, bool(all_customers))
            for _, entity, customer_id, all_customers, txid in rows
            if entity is not None
        ]
        self.recent.cover(floor, changes)

    def _listen(self, conn: psycopg.Connection) -> None:
        while not self._stop.is_set():
            for notify in conn.notifies(timeout=0.5):
                notice = ChangeNotice.parse(notify.payload)
                if notice is not None:
                    self.recent.record(
                        Change(notice.txid, notice.entity, notice.customer_id, notice.all_customers)
                    )
