"""`crm-pipeline cache-worker` as a process: killed mid-stream and restarted, nothing is lost."""

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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


def _start(env, log):
    return subprocess.Popen([CLI, "cache-worker", "--no-report"], env=env, stdout=log, stderr=log)


@pytest.mark.slow
def test_a_killed_worker_restarts_and_loses_nothing(clean_db, database_url, dirs, tmp_path):
    seed_customers(clean_db, 20)
    env = worker_env(database_url, dirs, CRM_CACHE_WORKER_COALESCE_SECONDS="0.2")
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(
        target=write_customers,
        args=(clean_db, stop, counter),
        kwargs={"new_customer_every": 4},
    )
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
