"""The cache worker's loop: one LISTEN connection, one active worker per name, wake-ups.

- A dedicated psycopg autocommit connection holds `pg_try_advisory_lock(lock_key(name))` and
  LISTENs on `CHANNEL`. A replica that does not get the lock stands by and retries every
  `poll_seconds`; when the active worker's connection goes away, so does its lock.
- A read happens on every wake-up (all pending notifications drained at once, so a burst is one
  read), every `poll_seconds` as a backstop, and on every (re)connect from the stored watermark.
  A notice whose transaction is not yet below the snapshot xmin (an older transaction is still
  open) is re-checked shortly after, since that older transaction may end without a notice.
- Whole-table files are rebuilt at most once per `coalesce_seconds`; the loop wakes up when
  the next one is due.
- Progress and heartbeat go to `cache_worker_state` (`beat`) after every batch and every few
  seconds when idle. Any error (the database going away, a full disk) ends the session: the
  worker reconnects with backoff and catches up from the stored watermark, so nothing is lost
  and it never exits on an outage.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from crm_pipeline.cache.stores import Location, store_from_settings
from crm_pipeline.cache.worker.batch import (
    FileReport,
    read_and_rebuild_customers,
    rebuild_whole_file,
)
from crm_pipeline.cache.worker.progress import Progress
from crm_pipeline.config import Settings
from crm_pipeline.db.changelog import CHANNEL, ChangeNotice
from crm_pipeline.db.worker_state import beat, read_worker_state, retire

log = logging.getLogger("crm_pipeline.cache.worker")

WAIT_SLICE_SECONDS = 0.25  # how long a stop request may go unnoticed while idle
RECHECK_FIRST_SECONDS = 0.02
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0
APPLICATION_NAME = "crm-cache-worker"


def lock_key(name: str) -> int:
    """The advisory lock key of worker `name`: a stable signed 64-bit hash of it."""
    digest = hashlib.blake2b(f"crm-pipeline/cache-worker/{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class Reporter(Protocol):
    """Where batch reports go (the Dagster instance); `submit` must not block."""

    def submit(self, reports: Sequence[FileReport]) -> None: ...


@dataclass(frozen=True)
class WorkerConfig:
    """What the loop needs from the settings."""

    name: str
    cache_dir: Location  # a folder, s3://bucket/prefix, or an open store
    coalesce_seconds: float = 1.0
    poll_seconds: float = 5.0
    heartbeat_stale_seconds: float = 30.0
    max_targeted_customers: int = 2000

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        worker = settings.worker
        return cls(
            name=worker.name,
            cache_dir=store_from_settings(settings),
            coalesce_seconds=worker.coalesce_seconds,
            poll_seconds=worker.poll_seconds,
            heartbeat_stale_seconds=worker.heartbeat_stale_seconds,
            max_targeted_customers=settings.sensors.max_targeted_customers,
        )

    @property
    def beat_seconds(self) -> float:
        # Several beats per stale period: one slow batch or lost beat does not look like death.
        return min(5.0, self.heartbeat_stale_seconds / 6)


class CacheWorker:
    """Keeps the cache files in step with `change_log`; `run` until `stop` is set."""

    def __init__(
        self,
        engine: Engine,
        conninfo: str,
        config: WorkerConfig,
        reporter: Reporter | None = None,
    ) -> None:
        self.engine = engine
        self.conninfo = conninfo
        self.config = config
        self.reporter = reporter
        self.active = threading.Event()  # set while this worker holds the lock
        self.batches = 0  # change windows read while active
        self._last_built: dict[str, float] = {}  # whole-table file -> monotonic end of build

    # -- sessions ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work (or stand by) until `stop` is set, reconnecting after any failure."""
        delay = BACKOFF_FIRST_SECONDS
        while not stop.is_set():
            healthy = False
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=APPLICATION_NAME,
                ) as conn:
                    if self._acquire(conn, stop):
                        healthy = self._serve(conn, stop)
            except (psycopg.Error, SQLAlchemyError, OSError) as exc:
                log.warning(
                    "cache worker %s: database or cache unavailable (%s); retrying in %.1fs",
                    self.config.name,
                    type(exc).__name__,
                    delay,
                )
            except Exception as exc:  # a builder bug: keep the loop, say where it happened
                frame = exc.__traceback__
                while frame is not None and frame.tb_next is not None:
                    frame = frame.tb_next
                where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
                # The type and place only: a message could quote row values.
                log.error(
                    "cache worker %s: batch failed (%s at %s); retrying in %.1fs",
                    self.config.name,
                    type(exc).__name__,
                    where,
                    delay,
                )
            finally:
                self.active.clear()
            if stop.is_set():
                break
            delay = BACKOFF_FIRST_SECONDS if healthy else min(delay * 2, BACKOFF_MAX_SECONDS)
            stop.wait(delay)
        self._retire()

    def _retire(self) -> None:
        """A clean stop: say so, so the sensor takes over at once (best effort: if the
        database is gone, the heartbeat goes stale by itself)."""
        try:
            with self.engine.begin() as db:
                retire(db, self.config.name)
        except SQLAlchemyError as exc:
            log.warning("cache worker: could not record the stop (%s)", type(exc).__name__)

    def _acquire(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        """Hold this name's advisory lock on `conn`, standing by while another worker has it."""
        key = lock_key(self.config.name)
        announced = False
        while not stop.is_set():
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                return True
            if not announced:
                log.info(
                    "cache worker %s: another replica is active; standing by", self.config.name
                )
                announced = True
            stop.wait(self.config.poll_seconds)
        return False

    def _serve(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        """Listen and rebuild until `stop`; True once a catch-up read succeeded."""
        cfg = self.config
        # LISTEN before the catch-up read: a commit between the two still wakes us up.
        conn.execute(f"LISTEN {CHANNEL}")
        with self.engine.connect() as db:
            state = read_worker_state(db, cfg.name)
        progress = Progress(state.watermark if state else None)
        self._beat(progress.watermark(), starting=True)
        self.active.set()
        log.info("cache worker %s: active, catching up from %s", cfg.name, progress.since)

        next_read = time.monotonic()  # the catch-up read
        next_beat = time.monotonic() + cfg.beat_seconds
        beaten = progress.watermark()
        awaited: int | None = None  # highest notified txid the windows have not covered yet
        recheck = RECHECK_FIRST_SECONDS
        noticed_at: float | None = None
        healthy = False
        while not stop.is_set():
            now = time.monotonic()
            due = progress.next_due()
            wake = min(next_read, next_beat, next_read if due is None else due)
            if wake > now:
                notices, arrived = self._wait(conn, wake - now, stop)
                fresh = [n.txid for n in notices if not _covered(n.txid, progress.since)]
                if fresh:
                    noticed_at = noticed_at or arrived
                    awaited = max(awaited or 0, *fresh)
                    next_read = time.monotonic()
            now = time.monotonic()
            if now >= next_read:
                self._read(progress, noticed_at)
                healthy = True
                noticed_at = None
                if awaited is not None and not _covered(awaited, progress.since):
                    next_read = time.monotonic() + recheck
                    recheck = min(recheck * 2, cfg.poll_seconds)
                else:
                    awaited, recheck = None, RECHECK_FIRST_SECONDS
                    next_read = time.monotonic() + cfg.poll_seconds
            self._pay_due(progress)
            watermark = progress.watermark()
            if watermark != beaten or time.monotonic() >= next_beat:
                conn.execute("SELECT 1")  # the lock connection is still there, or we stop here
                self._beat(watermark)
                beaten, next_beat = watermark, time.monotonic() + cfg.beat_seconds
        return healthy

    def _wait(
        self, conn: psycopg.Connection, timeout: float, stop: threading.Event
    ) -> tuple[list[ChangeNotice], float | None]:
        """The notices arriving within `timeout` (all pending at once) and when the first came."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got = list(conn.notifies(timeout=min(remaining, WAIT_SLICE_SECONDS), stop_after=1))
            if got:
                arrived = time.monotonic()
                while more := list(conn.notifies(timeout=0)):  # drain: a burst is one batch
                    got += more
                notices = [ChangeNotice.parse(n.payload) for n in got if n.channel == CHANNEL]
                return [n for n in notices if n is not None], arrived
        return [], None

    # -- work --------------------------------------------------------------------------------

    def _read(self, progress: Progress, noticed_at: float | None) -> None:
        cfg = self.config
        batch = read_and_rebuild_customers(
            self.engine, cfg.cache_dir, progress.since, cfg.max_targeted_customers, noticed_at
        )
        self.batches += 1
        for file in batch.whole_files:
            built = self._last_built.get(file.asset)
            due = time.monotonic() if built is None else built + cfg.coalesce_seconds
            progress.owe(file, batch.window.since, due, noticed_at)
        progress.since = batch.window.upto
        if batch.targeted:
            self._report(batch.targeted)

    def _pay_due(self, progress: Progress) -> None:
        for owed in progress.due(time.monotonic()):
            report = rebuild_whole_file(
                self.engine, self.config.cache_dir, owed.file, owed.noticed_at
            )
            # Counted from the end of the build: a build slower than the coalescing period
            # (the summary over many orders) still leaves the database some rest.
            self._last_built[owed.file.asset] = time.monotonic()
            progress.paid(owed.file)
            self._report([report])

    def _beat(self, watermark: str | None, *, starting: bool = False) -> None:
        with self.engine.begin() as db:
            beat(db, self.config.name, watermark, starting=starting)

    def _report(self, reports: Sequence[FileReport]) -> None:
        if self.reporter is None:
            return
        try:
            self.reporter.submit(reports)
        except Exception as exc:  # reporting is never worth a lost or delayed write
            log.warning("cache worker: report not queued (%s)", type(exc).__name__)


def _covered(txid: int, since: str | None) -> bool:
    """Has a window ending at `since` read every change of transaction `txid`?"""
    return since is not None and txid < int(since)
