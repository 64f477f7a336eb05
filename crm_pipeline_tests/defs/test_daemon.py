"""End to end through a real `dagster-daemon`: a psql-style write reaches the cache file.

The daemon evaluates `change_log_sensor` (on by default) in its code server, the queued run
coordinator launches the run in a fresh process, and `analytics_summary` rewrites summary.json.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


def _wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n--- daemon log ---\n{tail}")


def _summary_customers(path: Path):
    try:
        return orjson.loads(path.read_bytes())["customers"]["total"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return None


@pytest.mark.slow
def test_db_write_reaches_cache_through_real_daemon(clean_db, database_url, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cache = tmp_path / "cache"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(cache),
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_CHANGE_SENSOR_INTERVAL": "1",
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [DAEMON, "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        summary = cache / "analytics" / "summary.json"
        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO customers (email, tier) VALUES ('d1@x.io', 'gold')"))
        _wait_for(lambda: _summary_customers(summary) == 1, 180, "first summary", log)

        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO customers (email, tier) VALUES ('d2@x.io', 'gold')"))
        _wait_for(lambda: _summary_customers(summary) == 2, 120, "updated summary", log)
        assert daemon.poll() is None, "the daemon died"
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
