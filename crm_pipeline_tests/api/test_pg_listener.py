"""`PgListener`, the LISTEN thread behind the key ring and the change listener: callbacks in
order, one commit's notifications in one call, one report per outage, backoff, recovery and a
clean stop."""

from __future__ import annotations

import itertools
import threading
import time

import psycopg

from crm_pipeline.api.pg_listener import PgListener
from crm_pipeline.db.engine import libpq_url
from crm_pipeline_tests.api.conftest import closed_port_url

CHANNEL = "test_pg_listener"


class Recorder:
    """Every callback, in order, as (name, detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def add(self, name: str, detail: object = None) -> None:
        with self.lock:
            self.events.append((name, detail))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.events]

    def payloads(self) -> list[list[str]]:
        with self.lock:
            return [detail for name, detail in self.events if name == "wake" and detail]


def _listener(conninfo, recorder: Recorder, **options) -> PgListener:
    defaults = {"retry_seconds": 0.05, "max_retry_seconds": 0.05}
    return PgListener(
        CHANNEL,
        conninfo,
        name="test-listener",
        application_name="crm-pipeline-test-listener",
        on_connect=lambda conn: recorder.add("connect"),
        on_wake=lambda conn, notifies: recorder.add("wake", [n.payload for n in notifies]),
        on_stop=lambda conn: recorder.add("stop"),
        on_disconnect=lambda: recorder.add("disconnect"),
        on_outage=lambda exc: recorder.add("outage", type(exc).__name__),
        on_recovery=lambda: recorder.add("recovery"),
        **{**defaults, **options},
    )


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_notifications_follow_the_connect_hook_and_one_commit_comes_in_one_call(database_url):
    recorder = Recorder()
    listener = _listener(lambda: libpq_url(database_url), recorder)
    listener.start()
    try:
        assert listener.ready.is_set() and listener.connections == 1
        with psycopg.connect(libpq_url(database_url)) as conn:  # one commit: one burst
            for n in range(5):
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(n)))
        _wait_for(lambda: sum(len(p) for p in recorder.payloads()) == 5)
        assert recorder.payloads() == [["0", "1", "2", "3", "4"]]
        assert recorder.names()[0] == "connect"
    finally:
        started = time.monotonic()
        listener.stop()
    assert time.monotonic() - started < 2  # noticed within a wait slice
    assert recorder.names()[-2:] == ["stop", "disconnect"]
    assert "outage" not in recorder.names()


def test_an_outage_is_reported_once_retried_with_backoff_then_recovered(database_url):
    recorder = Recorder()
    attempts: list[float] = []
    reachable = threading.Event()
    down = libpq_url(closed_port_url())

    def conninfo() -> str:
        attempts.append(time.monotonic())
        return libpq_url(database_url) if reachable.is_set() else down

    listener = _listener(conninfo, recorder, retry_seconds=0.1, max_retry_seconds=0.4)
    listener.start()
    try:
        assert listener.ready.is_set() and listener.connections == 0  # ready: it failed
        _wait_for(lambda: len(attempts) >= 7)
        # Waits of 0.1, 0.2, then 0.4 s each (a wait is never shorter than asked; without the
        # cap they would reach 3.2 s).
        gaps = [b - a for a, b in itertools.pairwise(attempts[:7])]
        assert gaps[0] < 0.4 <= min(gaps[2:])
        assert max(gaps) < 1.0
        assert recorder.names().count("outage") == 1
        assert recorder.names().count("disconnect") >= 6  # after every attempt

        reachable.set()
        _wait_for(lambda: listener.connections == 1)
        names = recorder.names()
        assert names[names.index("connect") :][:2] == ["connect", "recovery"]
    finally:
        listener.stop()
    assert recorder.names().count("recovery") == 1
