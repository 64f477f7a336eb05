"""`crm-pipeline cache-worker` as a process: killed mid-stream and restarted, nothing is lost."""

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from crm_pipeline_tests.cache.worker_helpers import (
    customer_mismatches,
    index_matches,
    seed_customers,
    stored_watermark,
    wait_for,
    worker_env,
)

CLI = str(Path(sys.executable).with_name("crm-pipeline"))


def _start(env, log):
    return subprocess.Popen([CLI, "cache-worker", "--no-report"], env=env, stdout=log, stderr=log)


def _writes(engine, stop: threading.Event, counter: list[int]):
    rng = random.Random(3)
    n = 0
    while not stop.is_set():
        n += 1
        with engine.begin() as conn:
            ids = conn.execute(text("SELECT id FROM customers")).scalars().all()
            cid = rng.choice(ids)
            conn.execute(
                text("UPDATE customers SET name = :n WHERE id = :c"), {"n": f"w{n}", "c": cid}
            )
            if n % 4 == 0:
                conn.execute(text("INSERT INTO customers (email) VALUES (:e)"), {"e": f"p{n}@x.io"})
            if n % 5 == 0:
                conn.execute(
                    text("INSERT INTO orders (customer_id, amount) VALUES (:c, 10)"), {"c": cid}
                )
        counter[0] = n
        time.sleep(0.005)


@pytest.mark.slow
def test_a_killed_worker_restarts_and_loses_nothing(clean_db, database_url, dirs, tmp_path):
    seed_customers(clean_db, 20)
    env = worker_env(database_url, dirs, CRM_CACHE_WORKER_COALESCE_SECONDS="0.2")
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(target=_writes, args=(clean_db, stop, counter))
    with open(tmp_path / "worker.log", "wb") as log:
        first = _start(env, log)
        try:
            wait_for(lambda: stored_watermark(clean_db) is not None, timeout=60)
            writer.start()
            wait_for(lambda: counter[0] > 50, timeout=30)
            first.send_signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
            killed_at = counter[0]
            wait_for(lambda: counter[0] > killed_at + 50, timeout=30)  # written while down
            second = _start(env, log)
            try:
                wait_for(lambda: counter[0] > killed_at + 150, timeout=30)
                stop.set()
                writer.join(10)
                wait_for(lambda: not customer_mismatches(clean_db, dirs["cache"]), timeout=30)
                wait_for(lambda: index_matches(clean_db, dirs["cache"]), timeout=30)
                second.send_signal(signal.SIGTERM)  # a graceful stop
                assert second.wait(15) == 0
            finally:
                if second.poll() is None:
                    second.kill()
                    second.wait(10)
        finally:
            stop.set()
            if first.poll() is None:
                first.kill()
                first.wait(10)
    output = (tmp_path / "worker.log").read_text()
    assert "@x.io" not in output  # no personal data in the logs
