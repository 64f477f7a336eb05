"""The API's view of the source-of-truth database: lazy engine, outage tracking, fast 503s.

When PostgreSQL is unreachable every route must answer quickly (cached reads keep working), so
after a failed connection attempt the next one waits `retry_seconds`; requests in between fail
at once instead of each waiting for a connect timeout. The first success clears the outage, so
the service recovers by itself when the database is back.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from crm_pipeline.api.problems import DatabaseUnavailable
from crm_pipeline.config import ConfigError

log = logging.getLogger("crm_pipeline.api")

_UNREACHABLE = (OperationalError, InterfaceError)
T = TypeVar("T")


class Database:
    """Connections for request handlers, with outage tracking."""

    def __init__(
        self,
        url: Callable[[], str],
        *,
        connect_timeout: int = 3,
        retry_seconds: float = 1.0,
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._retry_seconds = retry_seconds
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._down_since: dt.datetime | None = None
        self._next_attempt = 0.0
        self._statement_lock = threading.Lock()
        self._statement_conn: Connection | None = None

    def down_since_iso(self) -> str | None:
        """When the current outage started, ISO 8601 (None while the database answers)."""
        since = self._down_since
        return since.isoformat(timespec="seconds") if since else None

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                try:
                    url = self._url()
                except ConfigError:
                    raise
                except Exception as exc:  # the embedded server failed to start, say
                    log.warning("database URL could not be resolved: %s", type(exc).__name__)
                    self._mark_down()
                    raise DatabaseUnavailable(self.down_since_iso()) from None
                # hide_parameters keeps row values (emails, phones) out of error messages.
                self._engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    hide_parameters=True,
                    connect_args={"connect_timeout": self._connect_timeout},
                )
            return self._engine

    def dispose(self) -> None:
        with self._statement_lock:
            self._drop_statement_connection()
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = dt.datetime.now(dt.UTC)
            log.warning("database unreachable; serving cached reads only")
        self._next_attempt = time.monotonic() + self._retry_seconds

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("database reachable again")
        self._down_since = None

    def check_available(self) -> None:
        """Raise DatabaseUnavailable at once while an outage is known and the retry is not due."""
        if self._down_since is not None and time.monotonic() < self._next_attempt:
            raise DatabaseUnavailable(self.down_since_iso())

    @contextmanager
    def _guard(self) -> Iterator[None]:
        self.check_available()
        try:
            yield
        except _UNREACHABLE as exc:
            if isinstance(exc, DBAPIError) and not _is_connectivity(exc):
                raise
            self._mark_down()
            raise DatabaseUnavailable(self.down_since_iso()) from None
        else:
            self._mark_up()

    @contextmanager
    def begin(self, actor: str | None = None) -> Iterator[Connection]:
        """One read-write transaction (committed on success).

        `actor` names the writer in every change row of the transaction (`crm.actor`, local to
        the transaction, so a pooled connection does not carry it into the next one).
        """
        with self._guard(), self.engine().begin() as conn:
            if actor is not None:
                conn.execute(text("SELECT set_config('crm.actor', :actor, true)"), {"actor": actor})
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only REPEATABLE READ transaction: one consistent snapshot for a cache file."""
        with (
            self._guard(),
            self.engine()
            .connect()
            .execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True) as conn,
            conn.begin(),
        ):
            yield conn

    def run_statement(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on a long-lived AUTOCOMMIT connection, one caller at a time (hot paths).

        Each statement sees a snapshot taken when it starts, like a transaction of its own, but
        without a pool checkout, a liveness ping, BEGIN and COMMIT: on a cache hit those cost
        more than the query. A kept connection that went away (server restart, idle timeout) is
        replaced and `work` retried once on a new one, so that alone is not an outage.
        """
        with self._guard(), self._statement_lock:
            for attempt in (1, 2):
                reused = self._statement_conn is not None
                if self._statement_conn is None:
                    self._statement_conn = (
                        self.engine().connect().execution_options(isolation_level="AUTOCOMMIT")
                    )
                try:
                    return work(self._statement_conn)
                except DBAPIError as exc:
                    self._drop_statement_connection()
                    if not (reused and attempt == 1 and _is_connectivity(exc)):
                        raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def _drop_statement_connection(self) -> None:
        if self._statement_conn is not None:
            try:
                self._statement_conn.invalidate()
                self._statement_conn.close()
            except DBAPIError:
                pass
            self._statement_conn = None

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self._guard(), self.engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except DatabaseUnavailable:
            return False


def _is_connectivity(exc: DBAPIError) -> bool:
    # OperationalError also covers e.g. a serialization failure; those are real errors, not an
    # outage. psycopg reports lost/refused connections with SQLSTATE class 08 or none at all.
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or sqlstate is None or sqlstate.startswith(("08", "57P"))
