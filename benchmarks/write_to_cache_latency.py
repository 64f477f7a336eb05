"""B7b: write -> cache latency through the reconciler (the change-log sensor and a real
dagster-daemon, the cache worker stopped), against the instance's own floor.

    .venv/bin/python benchmarks/write_to_cache_latency.py [--quick] [--writes 20] [--interval 1]

One `dagster-daemon` on one instance (the repo-root dagster.yaml minus its storage: queued run
coordinator, dequeue every second) loads two code locations:
  ours       crm_pipeline: a row updated in `customers` (as psql would) -> change_log trigger ->
             change_log_sensor tick -> queued run -> cache/customers/<id>.json rewritten.
  reference  benchmarks/floor_location.py: a value written to a trigger file -> a trivial
             sensor tick at the same interval -> queued run of a one-step asset that writes it
             to a file. That is what any sensor-triggered run costs on this instance: the floor.
Writes alternate between the two, so both see the same machine load. Each latency is from the
commit (or trigger write) to the file showing the new value, polled every 10 ms.
Target: p95(ours) <= 1.5 x p95(floor). Also printed: the same targeted rebuild in-process (no
sensor, no queue, no process start), i.e. our own work.
"""

import subprocess
import sys
import time
from pathlib import Path

import harness  # first: puts the repo root on sys.path
from customer_data import name_in_file, profiles_run, rename_customer
from sqlalchemy import text

from crm_pipeline.db.engine import get_engine
from crm_pipeline.orchestrate import local_instance_config
from crm_pipeline.processes import stop_session_leader

ROOT = harness.ROOT


def _add(parser) -> None:
    parser.add_argument("--writes", type=int, help="writes per path (default 20, quick 5)")
    parser.add_argument("--interval", type=int, default=1, help="sensor interval, seconds")


def _text_of(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _wait(predicate, timeout: float, what: str) -> float:
    """Seconds until `predicate()` holds, polled every 10 ms."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError(f"{what} did not catch up within {timeout}s")


def _workspace(work: Path) -> Path:
    path = work / "workspace.yaml"
    path.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: crm_pipeline.definitions\n"
        "      attribute: defs\n"
        "      location_name: crm_pipeline\n"
        f"      working_directory: {ROOT}\n"
        "  - python_file:\n"
        f"      relative_path: {ROOT / 'benchmarks' / 'floor_location.py'}\n"
        "      location_name: floor\n"
    )
    return path


def _in_process_rebuild(url: str, work: Path, cid: int, writes: int) -> list[float]:
    """Seconds of `writes` rounds of a write and the targeted asset run in this process."""
    import dagster as dg

    run = profiles_run(url, work / "ref", [cid])  # its files beside the daemon's
    engine = get_engine(url)
    times = []
    for i in range(writes):
        start = time.perf_counter()
        rename_customer(engine, cid, f"r{i}")
        dg.materialize(**run)
        times.append(time.perf_counter() - start)
    return times


def start_daemon(work: Path, url: str, interval: int) -> tuple[subprocess.Popen, Path]:
    """A dagster-daemon on a fresh local instance (the repo's dagster.yaml minus its PostgreSQL
    storage, as `make ui` and `crm-pipeline dev` get it) loading our code location and the
    floor's; (the daemon, its DAGSTER_HOME)."""
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_config())
    env = harness.product_env(
        DAGSTER_HOME=str(home),
        CRM_DATABASE_URL=url,
        CRM_CACHE_DIR=str(work / "cache"),
        CRM_DATA_DIR=str(work / "data"),
        CRM_CHANGE_SENSOR_INTERVAL=str(interval),
        CRM_BENCH_FLOOR_TRIGGER=str(work / "trigger"),
        CRM_BENCH_FLOOR_OUTPUT=str(work / "floor-output"),
    )
    command = [harness.venv_command("dagster-daemon"), "run", "-w", str(_workspace(work))]
    return harness.start_session(command, env), home


def measure_alternating(work: Path, engine, cid: int, writes: int) -> dict[str, list[float]]:
    """After one warm-up of each location, alternate a customer write and a floor trigger,
    each timed to its file; seconds keyed ours and floor."""
    path = work / "cache" / "customers" / f"{cid}.json"
    trigger, output = work / "trigger", work / "floor-output"
    latencies: dict[str, list[float]] = {"ours": [], "floor": []}
    # Warm-up: the first tick of each sensor, and one run of each location.
    _wait(lambda: name_in_file(path) == "v0", 300, "the first customer file")
    trigger.write_text("warm")
    _wait(lambda: _text_of(output) == "warm", 300, "the first floor run")
    for i in range(1, writes + 1):
        rename_customer(engine, cid, f"v{i}")
        latencies["ours"].append(_wait(lambda i=i: name_in_file(path) == f"v{i}", 120, "our file"))
        trigger.write_text(f"t{i}")
        latencies["floor"].append(_wait(lambda i=i: _text_of(output) == f"t{i}", 120, "the floor"))
    return latencies


def report_latencies(args, writes: int, latencies: dict[str, list[float]]) -> None:
    """Print (and record) B7b's row, with the p50/p95/max of ours, the floor and in-process."""
    ours, floor = latencies["ours"], latencies["floor"]
    p = harness.percentile
    measurements = [
        harness.measure(
            "B7b write->cache p95 vs sensor-run floor",
            p(ours, 95),
            p(floor, 95),
            "s",
            "<= 1.5",
            note=f"p50 ours {p(ours, 50):.2f}s, floor {p(floor, 50):.2f}s",
        )
    ]
    details = [
        f"{writes} writes each, sensor interval {args.interval}s, dequeue interval 1s",
        *harness.latency_table(
            [
                ("ours: psql write -> daemon -> file", ours),
                ("floor: trivial sensor-triggered run", floor),
                ("in-process targeted rebuild", latencies["in_process"]),
            ],
            "s",
            36,
        ),
    ]
    harness.report(
        "B7b write -> cache latency through the reconciler (real dagster-daemon)",
        measurements,
        args,
        details,
    )


def main() -> int:
    """One customer, one daemon with both locations: time alternating writes, then the same
    rebuild in process; report B7b."""
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    writes = args.writes or (5 if args.quick else 20)
    with harness.private_postgres("latency") as (work, new_database):
        url = new_database("crm")
        engine = get_engine(url)
        with engine.begin() as conn:
            cid = conn.execute(
                text("INSERT INTO customers (email, name) VALUES ('bench@x.io', 'v0') RETURNING id")
            ).scalar_one()
        daemon, home = start_daemon(work, url, args.interval)
        try:
            latencies = measure_alternating(work, engine, cid, writes)
        finally:
            stop_session_leader(daemon, env_name="DAGSTER_HOME", env_value=str(home))
        latencies["in_process"] = _in_process_rebuild(url, work, cid, writes)

    report_latencies(args, writes, latencies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
