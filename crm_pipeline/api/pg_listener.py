"""`PgListener`: LISTEN on one PostgreSQL channel in a daemon thread, reconnecting with backoff.

The API runs two: the key ring (`auth.KeyRing`) and the change notifications
(`change_listener.ChangeListener`). This class owns what they share: the autocommit connection,
LISTEN, waiting for notifications while watching for a stop request, the reconnect loop with its
backoff, and logging an outage once instead of once per attempt (the callbacks word it). Each
user keeps its own meaning in the callbacks. See docs/architecture.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
from psycopg import Notify, sql

WAIT_SLICE_SECONDS = 0.5  # how long a stop request may go unnoticed while idle
CONNECT_TIMEOUT_SECONDS = 3


def _nothing(*_args: object) -> None:
    return None


class PgListener:
    """A daemon thread that LISTENs on `channel` and hands what happens to its callbacks.

    All callbacks run on the listener thread; an exception from one ends the session as a lost
    connection does (then: `on_disconnect`, a wait, a new connection).

    - `on_connect(conn)`: LISTEN is in effect; load or catch up here, so a change committed
      between LISTEN and this read still arrives as a notification.
    - `on_wake(conn, notifies)`: after each wait, with the notifications that arrived (those
      read together come together; none when the wait slice ran out, for periodic work).
    - `on_stop(conn)`: a stop was requested and the connection is still open (flush here).
    - `on_disconnect()`: after every session, failed or not: notifications may be missed now.
    - `on_outage(exc)`: the first failure of an outage (connecting, or a callback raised).
    - `on_recovery()`: the first successful `on_connect` after an outage.

    The delay before reconnecting starts at `retry_seconds` and doubles up to
    `max_retry_seconds` while attempts keep failing; a successful `on_connect` resets it.
    """

    def __init__(
        self,
        channel: str,
        conninfo: Callable[[], str],
        *,
        name: str,
        application_name: str,
        on_connect: Callable[[psycopg.Connection], None],
        on_wake: Callable[[psycopg.Connection, list[Notify]], None],
        on_stop: Callable[[psycopg.Connection], None] = _nothing,
        on_disconnect: Callable[[], None] = _nothing,
        on_outage: Callable[[Exception], None] = _nothing,
        on_recovery: Callable[[], None] = _nothing,
        retry_seconds: float,
        max_retry_seconds: float,
    ) -> None:
        self.channel = channel
        self.name = name
        self.application_name = application_name
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.connections = 0  # successful `on_connect` calls so far (tests and diagnostics)
        # Set after the first `on_connect` succeeded or the first attempt failed.
        self.ready = threading.Event()
        self._conninfo = conninfo
        self._on_connect = on_connect
        self._on_wake = on_wake
        self._on_stop = on_stop
        self._on_disconnect = on_disconnect
        self._on_outage = on_outage
        self._on_recovery = on_recovery
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait_seconds: float = 5.0) -> None:
        """Start the thread and wait (bounded) until it is `ready`."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self.ready.wait(wait_seconds)

    def stop(self) -> None:
        """Ask the thread to stop and wait for it (it notices within `WAIT_SLICE_SECONDS`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        delay: float | None = None  # None: the next failure is the first of an outage
        in_outage = False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._on_connect(conn)
                    self.connections += 1
                    if in_outage:
                        self._on_recovery()
                    in_outage = False
                    delay = None
                    self.ready.set()
                    self._listen(conn)
            except Exception as exc:  # unreachable database, dropped connection, ...
                if not in_outage:
                    self._on_outage(exc)
                    in_outage = True
            finally:
                self._on_disconnect()
            self.ready.set()
            if self._stop.is_set():
                break
            delay = self.retry_seconds if delay is None else min(delay * 2, self.max_retry_seconds)
            self._stop.wait(delay)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self._conninfo(),
            autocommit=True,  # LISTEN is in effect at once, and no transaction stays open
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=self.application_name,
            # A peer that vanished without closing (TCP only) is noticed in seconds.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )

    def _listen(self, conn: psycopg.Connection) -> None:
        # Nothing is sent on the connection here: waiting for notifications is read-only.
        while not self._stop.is_set():
            # Returns on the first arrival, with every notification read along with it.
            notifies = list(conn.notifies(timeout=WAIT_SLICE_SECONDS, stop_after=1))
            self._on_wake(conn, notifies)
        self._on_stop(conn)
