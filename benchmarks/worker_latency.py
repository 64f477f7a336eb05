"""B7a: psql write -> customer file through the cache worker, against a Redis job queue.

    .venv/bin/python benchmarks/worker_latency.py [--quick] [--writes 60]

ours       `crm-pipeline cache-worker` (a separate process): a row updated in `customers`, as
           psql would -> change_log trigger -> NOTIFY on commit -> the worker reads the change
           log and rebuilds cache/customers/<id>.json.
reference  the seed's design, in the same run on the same PostgreSQL server: the same write,
           then the writer pushes the customer id to the machine's Redis; a worker process
           (benchmarks/redis_queue_worker.py) pops it and rebuilds the same file with the same
           builder. Each path has its own database, so neither worker sees the other's writes.
bare       the same rebuild in this process right after the commit: no queue, no wake-up.
Writes alternate between the paths, so both see the same machine load. Latency: from the
commit returning to the file showing the new name, polled every millisecond.
Targets: p95(ours) <= 1.2 x p95(Redis queue) and <= 3 x p95(bare rebuild).
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import orjson
import redis
from sqlalchemy import text

from crm_pipeline.cache.rebuild import rebuild_customers
from crm_pipeline.db.engine import get_engine, read_snapshot
from crm_pipeline.processes import stop_session_leader

ROOT = harness.ROOT


def _add(parser) -> None:
    parser.add_argument("--writes", type=int, help="writes per path (default 60, quick 15)")


def _name_in_file(path: Path) -> str | None:
    try:
        return orjson.loads(path.read_bytes())["customer"]["name"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return None


def _wait_for(path: Path, name: str, timeout: float = 30.0) -> float:
    """Seconds until `path` shows `name` (the clock started by the caller's commit)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if _name_in_file(path) == name:
            return time.perf_counter()
        time.sleep(0.001)
    raise TimeoutError(f"{path.name} did not show {name!r} within {timeout}s")


def _seed(url: str, customers: int) -> list[int]:
    with get_engine(url).begin() as conn:
        return list(
            conn.execute(
                text(
                    "INSERT INTO customers (email, name)"
                    " SELECT 'c' || g || '@bench.io', 'v0' FROM generate_series(1, :n) g"
                    " RETURNING id"
                ),
                {"n": customers},
            ).scalars()
        )


def _update(engine, cid: int, name: str) -> float:
    with engine.begin() as conn:
        conn.execute(text("UPDATE customers SET name = :n WHERE id = :i"), {"n": name, "i": cid})
    return time.perf_counter()  # the commit has returned


def main() -> int:
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    writes = args.writes or (15 if args.quick else 60)
    queue = f"crm-bench-b7a-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()  # the machine's Redis: a failure here is a failure of the benchmark
    with harness.private_postgres("worker") as (work, new_database):
        ours_url, ref_url = new_database("crm"), new_database("crm_ref")
        ours_ids, ref_ids = _seed(ours_url, 20), _seed(ref_url, 20)
        ours_cache, ref_cache, bare_cache = work / "cache", work / "ref", work / "bare"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_"))},
            "CRM_DATABASE_URL": ours_url,
            "CRM_CACHE_DIR": str(ours_cache),
            "CRM_DATA_DIR": str(work / "data"),
            "DAGSTER_HOME": str(work / "dagster_home"),  # its runless reports go here
        }
        (work / "dagster_home").mkdir()
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("crm-pipeline")), "cache-worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        reference = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "redis_queue_worker.py")]
            + [ref_url, str(ref_cache), queue],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        ours_engine, ref_engine = get_engine(ours_url), get_engine(ref_url)
        ours: list[float] = []
        ref: list[float] = []
        bare: list[float] = []
        try:
            client.blpop([f"{queue}:ready"], timeout=120)
            # Warm-up: the worker's catch-up and first rebuild, the reference's first job.
            cid = ours_ids[0]
            _wait_for(ours_cache / "customers" / f"{cid}.json", "v0", 120)
            for i in range(-3, writes):
                n = i % len(ours_ids)
                name = f"w{i}"
                committed = _update(ours_engine, ours_ids[n], name)
                done = _wait_for(ours_cache / "customers" / f"{ours_ids[n]}.json", name)
                committed_ref = _update(ref_engine, ref_ids[n], name)
                client.lpush(queue, str(ref_ids[n]))
                done_ref = _wait_for(ref_cache / "customers" / f"{ref_ids[n]}.json", name)
                committed_bare = _update(ref_engine, ref_ids[n], f"b{i}")
                with read_snapshot(ref_engine) as conn:
                    rebuild_customers(conn, bare_cache, [ref_ids[n]])
                done_bare = time.perf_counter()
                if i >= 0:  # the first rounds warm connections and caches
                    ours.append(done - committed)
                    ref.append(done_ref - committed_ref)
                    bare.append(done_bare - committed_bare)
        finally:
            client.lpush(queue, "stop")
            reference.wait(timeout=30)
            stop_session_leader(worker, env_name="CRM_CACHE_DIR", env_value=str(ours_cache))
            client.delete(queue, f"{queue}:ready")

    p = harness.percentile
    ms = lambda v: v * 1000  # noqa: E731
    measurements = [
        harness.measure(
            "B7a write->file p95 vs Redis-queue worker",
            ms(p(ours, 95)),
            ms(p(ref, 95)),
            "ms",
            "<= 1.2",
            note=f"p50 ours {ms(p(ours, 50)):.1f} ms, Redis queue {ms(p(ref, 50)):.1f} ms",
        ),
        harness.measure(
            "B7a write->file p95 vs bare in-process rebuild",
            ms(p(ours, 95)),
            ms(p(bare, 95)),
            "ms",
            "<= 3",
            note=f"p50 bare {ms(p(bare, 50)):.1f} ms",
        ),
    ]
    details = [
        f"{writes} writes per path, alternating; polled every 1 ms",
        f"{'':<40}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}",
    ]
    for label, values in (
        ("ours: write -> NOTIFY -> cache worker", ours),
        ("reference: write -> Redis -> worker", ref),
        ("bare: write, rebuild in process", bare),
    ):
        details.append(
            f"{label:<40}{ms(p(values, 50)):>8.1f}{ms(p(values, 95)):>8.1f}{ms(max(values)):>8.1f}"
        )
    harness.report("B7a write -> cache file through the cache worker", measurements, args, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
