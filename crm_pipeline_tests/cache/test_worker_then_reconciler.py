"""The issue's acceptance, end to end: 8 concurrent writers committing out of order, the cache
worker (a real `crm-pipeline cache-worker` process) killed mid-stream, and the change-log sensor
bringing every file up to date with real Dagster runs."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline_tests.cache.worker_helpers import (
    customer_mismatches,
    index_matches,
    seed_customers,
    stored_watermark,
    wait_for,
    worker_env,
    write_customers,
)

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
WRITERS = 8
CACHE_ASSETS = [
    customer_profiles_cache,
    customer_index_cache,
    marketing_insights_cache,
    analytics_summary,
]


def _reconcile(database_url: str, resources: dict) -> int:
    """Tick the sensor and run what it asks, until it asks nothing; return the runs made."""
    cursor, runs = None, 0
    for _ in range(10):
        with dg.build_sensor_context(
            cursor=cursor, resources={"postgres": resources["postgres"]}
        ) as context:
            result = change_log_sensor(context)
        cursor = result.cursor
        if not result.run_requests:
            return runs
        for request in result.run_requests:
            assert dg.materialize(
                CACHE_ASSETS,
                selection=request.asset_selection,
                run_config=request.run_config,
                resources=resources,
            ).success
            runs += 1
    raise AssertionError("the sensor kept asking for runs")


@pytest.mark.slow
def test_writers_worker_killed_then_the_sensor_brings_every_file_up_to_date(
    clean_db, database_url, dirs, tmp_path, monkeypatch
):
    seed_customers(clean_db, 30)
    env = worker_env(database_url, dirs)
    stop, counter = threading.Event(), [0] * WRITERS
    barrier = threading.Barrier(WRITERS + 1)
    writers = [
        threading.Thread(
            target=write_customers,
            args=(clean_db, stop, counter),
            kwargs={
                "slot": seed,
                "seed": seed,
                "order_every": 3,
                "hold": 0.02,
                "pause": 0,
                "barrier": barrier,
            },
        )
        for seed in range(WRITERS)
    ]
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [CLI, "cache-worker", "--no-report"], env=env, stdout=log, stderr=log
        )
        try:
            wait_for(lambda: stored_watermark(clean_db) is not None, timeout=60)
            for t in writers:
                t.start()
            barrier.wait()
            wait_for(lambda: sum(counter) > 80, timeout=60)
            worker.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
            assert worker.wait(10) == -signal.SIGKILL
            killed_at = sum(counter)
            wait_for(lambda: sum(counter) > killed_at + 80, timeout=60)  # written while down
        finally:
            stop.set()
            for t in writers:
                if t.is_alive():
                    t.join(30)
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert customer_mismatches(clean_db, dirs["cache"]), "the test means something: files lag"

    # The sensor treats the worker as dead once its heartbeat is a second old.
    monkeypatch.setenv("CRM_CACHE_WORKER_NAME", "test-worker")
    monkeypatch.setenv("CRM_CACHE_WORKER_STALE_SECONDS", "1")
    time.sleep(1.2)
    resources = {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }
    assert _reconcile(database_url, resources) >= 1
    assert customer_mismatches(clean_db, dirs["cache"]) == []
    assert index_matches(clean_db, dirs["cache"])
