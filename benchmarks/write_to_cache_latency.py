"""Write -> cache latency through a real dagster-daemon (issue 4's measurement).

A row updated in `customers` (as psql would) must show up in `cache/customers/<id>.json`.
Ours: commit -> sensor tick -> queued run -> file rewritten, timed by polling the file.
Reference, same run: commit -> the same targeted rebuild run in-process (no sensor, no queue,
no process start), i.e. the work itself.

    .venv/bin/python benchmarks/write_to_cache_latency.py [--writes 20] [--interval 1]

Uses a private embedded PostgreSQL in a temp dir (or CRM_DATABASE_URL when set).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import orjson
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crm_pipeline.config import load_settings  # noqa: E402
from crm_pipeline.db import embedded, migrate  # noqa: E402
from crm_pipeline.db.engine import get_engine  # noqa: E402
from crm_pipeline.defs.cache.assets import customer_profiles_cache  # noqa: E402
from crm_pipeline.defs.resources import PostgresResource, StorageResource  # noqa: E402


def _name_in_file(path: Path) -> str | None:
    try:
        return orjson.loads(path.read_bytes())["customer"]["name"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return None


def _wait(predicate, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError("the cache file did not catch up")


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--interval", type=int, default=1, help="sensor interval, seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    url = load_settings().database_url or embedded.embedded_database_url(work / "pg", "bench")
    migrate.upgrade(url)
    engine = get_engine(url)
    with engine.begin() as conn:
        cid = conn.execute(
            text(
                "INSERT INTO customers (email, name) VALUES ('bench@x.io', 'v0')"
                " ON CONFLICT (email) DO UPDATE SET name = 'v0' RETURNING id"
            )
        ).scalar_one()
    cache = work / "cache"
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "CRM_DATABASE_URL": url,
        "CRM_CACHE_DIR": str(cache),
        "CRM_DATA_DIR": str(work / "data"),
        "CRM_CHANGE_SENSOR_INTERVAL": str(args.interval),
    }
    daemon = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-daemon")),
            "run",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    path = cache / "customers" / f"{cid}.json"
    ours: list[float] = []
    try:
        _wait(lambda: _name_in_file(path) == "v0", 240)  # first tick: full rebuild
        for i in range(1, args.writes + 1):
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE customers SET name = :n WHERE id = :i"), {"n": f"v{i}", "i": cid}
                )
            ours.append(_wait(lambda i=i: _name_in_file(path) == f"v{i}", 120))
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(30)

    resources = {
        "postgres": PostgresResource(database_url=url),
        "storage": StorageResource(data_dir=str(work / "data"), cache_dir=str(work / "ref")),
    }
    config = {
        "ops": {"customer_profiles_cache": {"config": {"customer_ids": [cid]}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    reference: list[float] = []
    for i in range(args.writes):
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE customers SET name = :n WHERE id = :i"), {"n": f"r{i}", "i": cid}
            )
        dg.materialize([customer_profiles_cache], resources=resources, run_config=config)
        reference.append(time.perf_counter() - start)

    print(f"write -> cache latency over {args.writes} writes (sensor interval {args.interval}s)")
    print(f"{'path':<44}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for label, values in (
        ("ours: psql write -> daemon -> file", ours),
        ("reference: write + in-process rebuild", reference),
    ):
        print(f"{label:<44}{_pct(values, 50):>8.2f}{_pct(values, 95):>8.2f}{max(values):>8.2f}")
    print(
        f"ratio p50 ours/reference: {_pct(ours, 50) / _pct(reference, 50):.1f}x "
        "(the difference is the sensor interval, the run queue and a run process start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
