"""`crm-pipeline cache-worker`: the worker (`crm_pipeline.cache.worker`) as a process, with its
batches reported to the Dagster instance, stopped cleanly by SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

from crm_pipeline.cache.worker.loop import CacheWorker, WorkerConfig
from crm_pipeline.config import Settings
from crm_pipeline.db import migrate
from crm_pipeline.db.engine import dispose_engines, get_engine, libpq_url, resolve_database_url

log = logging.getLogger("crm_pipeline.cache.worker")


def run_cache_worker(settings: Settings, *, report: bool = True) -> int:
    """Run the cache worker until SIGINT or SIGTERM; return the exit status."""
    settings.require_production_ready("cache-worker")
    url = resolve_database_url(settings)
    try:
        migrate.require_migrated(url)
    except migrate.DatabaseNotMigrated:
        raise
    except Exception as exc:  # unreachable now: the loop waits for it, it does not exit
        log.warning("database not reachable at start (%s); waiting for it", type(exc).__name__)
    reporter = None
    if report:
        from crm_pipeline.defs.cache.worker_report import dagster_reporter

        reporter = dagster_reporter(settings)
    worker = CacheWorker(
        get_engine(url), libpq_url(url), WorkerConfig.from_settings(settings), reporter
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        worker.run(stop)
    finally:
        if reporter is not None:
            reporter.close()
        dispose_engines()
    log.info("cache worker %s stopped", settings.worker.name)
    return 0
