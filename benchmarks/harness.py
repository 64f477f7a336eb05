"""Shared plumbing for the benchmarks: arguments, a private PostgreSQL, the table, the results.

Every benchmark script measures our path and a reference *in the same run* and reports
`Measurement`s whose ratio is always ours / reference, in the unit the target is stated in
(rows/s for throughput targets such as "≥ 0.5× COPY", seconds for "≤ 1.5×" time targets).
Absolute times vary with the machine; the ratios are what we compare.

A script is run alone (`.venv/bin/python benchmarks/bulk_load.py --quick`) or by
`benchmarks/run_all.py` (`make bench`), which passes `--results FILE` and collects every
script's measurements into `benchmarks/results.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Measurement:
    """One row of results.json: our figure, the reference's, and ours/reference vs the target."""

    name: str
    ours: float
    reference: float
    unit: str
    ratio: float
    target: str
    passed: bool
    note: str = ""

    def as_result(self) -> dict:
        """The `{ours, reference, unit, ratio, target, pass}` record (plus a note when set)."""
        record = asdict(self)
        record.pop("name")
        record["pass"] = record.pop("passed")
        if not self.note:
            record.pop("note")
        return record


def measure(name: str, ours: float, reference: float, unit: str, target: str, note: str = ""):
    """Build a Measurement; `target` is like ">= 0.5" or "<= 1.5" and applies to ours/reference."""
    op, _, bound = target.partition(" ")
    if op not in _OPS:
        raise ValueError(f"target must start with >= or <=, got {target!r}")
    ratio = ours / reference if reference else float("inf")
    return Measurement(
        name=name,
        ours=round(ours, 6),
        reference=round(reference, 6),
        unit=unit,
        ratio=round(ratio, 4),
        target=target,
        passed=bool(_OPS[op](ratio, float(bound))),
        note=note,
    )


def parse_args(description: str, add: Callable[[argparse.ArgumentParser], None] | None = None):
    """The common arguments (--quick, --results) plus the script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for development (not for the record)"
    )
    parser.add_argument("--results", type=Path, help="append measurements to this JSON file")
    if add:
        add(parser)
    return parser.parse_args()


def report(title: str, measurements: list[Measurement], args, details: list[str] = ()) -> None:
    """Print one benchmark's table and, with --results, append its rows to that file."""
    print()
    print(title)
    header = f"{'measurement':<46}{'ours':>12}{'reference':>12}  {'unit':<8}{'ratio':>8}"
    print(header + f"  {'target':<8}{'pass':>5}")
    print("-" * (len(header) + 15))
    for m in measurements:
        print(
            f"{m.name:<46}{m.ours:>12.4g}{m.reference:>12.4g}  {m.unit:<8}{m.ratio:>8.3f}"
            f"  {m.target:<8}{'yes' if m.passed else 'NO':>5}"
        )
    for line in details:
        print(f"  {line}")
    sys.stdout.flush()
    if args.results:
        existing = json.loads(args.results.read_text()) if args.results.exists() else {}
        existing.update({m.name: m.as_result() for m in measurements})
        args.results.write_text(json.dumps(existing, indent=2))


@contextlib.contextmanager
def private_postgres(prefix: str) -> Iterator[tuple[Path, Callable[..., str]]]:
    """A throwaway embedded PostgreSQL; yields (work dir, new_database(name, migrated=True) -> url).

    Each benchmark gets its own server in its own temp dir so nothing it does can touch the
    user's data or another benchmark, and the server and its files are gone afterwards.
    """
    from crm_pipeline.db import embedded, migrate
    from crm_pipeline.db.engine import dispose_engines

    work = Path(tempfile.mkdtemp(prefix=f"crm-bench-{prefix}-"))
    server = embedded.start_server(work / "pg", delete_on_exit=True)
    admin = server.get_uri("postgres")

    def new_database(name: str, migrated: bool = True) -> str:
        embedded.ensure_database(admin, name)
        url = embedded.server_url(server, name)
        if migrated:
            migrate.upgrade(url)
        return url

    try:
        yield work, new_database
    finally:
        dispose_engines()
        server.cleanup()  # stops the server and deletes its data directory
        shutil.rmtree(work, ignore_errors=True)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq/psycopg accepts it."""
    from crm_pipeline.db.engine import libpq_url

    return libpq_url(url)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(repeats: int, fn: Callable[[], object], before: Callable[[], object] | None = None):
    """The fastest of `repeats` calls (each after `before`, untimed): the least noisy figure."""
    times = []
    for _ in range(repeats):
        if before:
            before()
        times.append(timed(fn))
    return min(times)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method), as we report p50/p95/p99."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency_table(series: list[tuple[str, list[float]]], unit: str, width: int) -> list[str]:
    """Detail lines: p50, p95 and max of each labelled series of seconds, shown in `unit`
    ("ms" with one decimal, or "s" with two), labels padded to `width`."""
    scale, digits = (1000, 1) if unit == "ms" else (1, 2)
    lines = [f"{'':<{width}}{'p50 ' + unit:>8}{'p95 ' + unit:>8}{'max ' + unit:>8}"]
    for label, values in series:
        figures = (percentile(values, 50), percentile(values, 95), max(values))
        lines.append(f"{label:<{width}}" + "".join(f"{v * scale:>8.{digits}f}" for v in figures))
    return lines


def product_env(strip: tuple[str, ...] = ("CRM_", "DAGSTER_"), **settings: str) -> dict[str, str]:
    """The environment for a product process a benchmark starts: this process's, minus every
    variable starting with `strip` (the user's settings must not leak in), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
    env.update(settings)
    return env


def venv_command(name: str) -> str:
    """A console script installed next to this Python (`crm-pipeline`, `dagster-daemon`)."""
    return str(Path(sys.executable).with_name(name))


def start_session(
    cmd: list[str], env: dict[str, str] | None = None, stderr: int | None = subprocess.DEVNULL
) -> subprocess.Popen:
    """A background process from the repo root in a session of its own, so that it and the
    children it starts can be stopped together; its output is discarded."""
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
