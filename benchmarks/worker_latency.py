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

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import redis
from customer_data import name_in_file, rename_customer
from sqlalchemy import text

from crm_pipeline.cache.rebuild import rebuild_customers
from crm_pipeline.db.engine import get_engine, read_snapshot
from crm_pipeline.processes import stop_session_leader

ROOT = harness.ROOT


def _add(parser) -> None:
    parser.add_argument("--writes", type=int, help="writes per path (default 60, quick 15)")


def _wait_for(path: Path, name: str, timeout: float = 30.0) -> float:
    """The perf_counter reading once `path` shows `name` (the clock started by the caller's
    commit), polled every millisecond."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if name_in_file(path) == name:
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


@dataclass
class Paths:
    """The three paths' databases, customers and cache folders, and the Redis queue."""

    work: Path
    ours_url: str
    ref_url: str
    ours_ids: list[int]
    ref_ids: list[int]
    queue: str
    client: redis.Redis

    def file(self, which: str, cid: int) -> Path:
        """Customer `cid`'s file in the cache folder of `which` (cache, ref or bare)."""
        return self.work / which / "customers" / f"{cid}.json"


def start_workers(paths: Paths) -> tuple[subprocess.Popen, subprocess.Popen, dict[str, str]]:
    """Our cache worker (on its own database) and the Redis-queue worker (on the other);
    (ours, reference, our worker's environment)."""
    work = paths.work
    env = harness.product_env(
        CRM_DATABASE_URL=paths.ours_url,
        CRM_CACHE_DIR=str(work / "cache"),
        CRM_DATA_DIR=str(work / "data"),
        DAGSTER_HOME=str(work / "dagster_home"),  # its runless reports go here
    )
    (work / "dagster_home").mkdir()
    worker = harness.start_session([harness.venv_command("crm-pipeline"), "cache-worker"], env)
    reference = harness.start_session(
        [sys.executable, str(ROOT / "benchmarks" / "redis_queue_worker.py")]
        + [paths.ref_url, str(work / "ref"), paths.queue],
        stderr=None,
    )
    return worker, reference, env


def measure_writes(paths: Paths, writes: int) -> dict[str, list[float]]:
    """Alternate a write on each path and time it to its file, after three warm-up rounds;
    seconds per write keyed ours, ref, bare."""
    ours_engine, ref_engine = get_engine(paths.ours_url), get_engine(paths.ref_url)
    latencies: dict[str, list[float]] = {"ours": [], "ref": [], "bare": []}
    paths.client.blpop([f"{paths.queue}:ready"], timeout=120)
    # Warm-up: the worker's catch-up and first rebuild, the reference's first job.
    _wait_for(paths.file("cache", paths.ours_ids[0]), "v0", 120)
    for i in range(-3, writes):
        n = i % len(paths.ours_ids)
        ours_id, ref_id, name = paths.ours_ids[n], paths.ref_ids[n], f"w{i}"
        committed = rename_customer(ours_engine, ours_id, name)
        done = _wait_for(paths.file("cache", ours_id), name)
        committed_ref = rename_customer(ref_engine, ref_id, name)
        paths.client.lpush(paths.queue, str(ref_id))
        done_ref = _wait_for(paths.file("ref", ref_id), name)
        committed_bare = rename_customer(ref_engine, ref_id, f"b{i}")
        with read_snapshot(ref_engine) as conn:
            rebuild_customers(conn, paths.work / "bare", [ref_id])
        done_bare = time.perf_counter()
        if i >= 0:  # the first rounds warm connections and caches
            latencies["ours"].append(done - committed)
            latencies["ref"].append(done_ref - committed_ref)
            latencies["bare"].append(done_bare - committed_bare)
    return latencies


def _ms(seconds: float) -> float:
    return seconds * 1000


def _p95_row(name: str, ours: list[float], reference: list[float], target: str, note: str):
    """A row comparing the p95 of our latencies with the reference's, in ms."""
    p = harness.percentile
    return harness.measure(name, _ms(p(ours, 95)), _ms(p(reference, 95)), "ms", target, note=note)


def report_latencies(args, writes: int, latencies: dict[str, list[float]]) -> None:
    """Print (and record) B7a's two p95 rows, with every path's p50/p95/max below."""
    ours, ref, bare = latencies["ours"], latencies["ref"], latencies["bare"]
    p = harness.percentile
    measurements = [
        _p95_row(
            "B7a write->file p95 vs Redis-queue worker",
            ours,
            ref,
            "<= 1.2",
            f"p50 ours {_ms(p(ours, 50)):.1f} ms, Redis queue {_ms(p(ref, 50)):.1f} ms",
        ),
        _p95_row(
            "B7a write->file p95 vs bare in-process rebuild",
            ours,
            bare,
            "<= 3",
            f"p50 bare {_ms(p(bare, 50)):.1f} ms",
        ),
    ]
    details = [
        f"{writes} writes per path, alternating; polled every 1 ms",
        *harness.latency_table(
            [
                ("ours: write -> NOTIFY -> cache worker", ours),
                ("reference: write -> Redis -> worker", ref),
                ("bare: write, rebuild in process", bare),
            ],
            "ms",
            40,
        ),
    ]
    harness.report("B7a write -> cache file through the cache worker", measurements, args, details)


def main() -> int:
    """Start both workers on their own databases, time alternating writes, report B7a."""
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    writes = args.writes or (15 if args.quick else 60)
    queue = f"crm-bench-b7a-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()  # the machine's Redis: a failure here is a failure of the benchmark
    with harness.private_postgres("worker") as (work, new_database):
        ours_url, ref_url = new_database("crm"), new_database("crm_ref")
        paths = Paths(
            work, ours_url, ref_url, _seed(ours_url, 20), _seed(ref_url, 20), queue, client
        )
        worker, reference, env = start_workers(paths)
        try:
            latencies = measure_writes(paths, writes)
        finally:
            client.lpush(queue, "stop")
            reference.wait(timeout=30)
            stop_session_leader(worker, env_name="CRM_CACHE_DIR", env_value=env["CRM_CACHE_DIR"])
            client.delete(queue, f"{queue}:ready")

    report_latencies(args, writes, latencies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
