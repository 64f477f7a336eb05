"""B6: `crm-pipeline sync facebook` of 30 days x 500 ads through the Graph emulator at 50 ms.

    .venv/bin/python benchmarks/graph_sync.py [--quick] [--days 30] [--ads 500] [--latency-ms 50]

Our path is what a user runs: `crm-pipeline sync facebook --since D1 --until Dn --no-cache` as a
subprocess (caches are not Graph sync), against one ad account (`act_1001`) of 500 ads served
by the bundled emulator in this process (every answer delayed by `--latency-ms`), into a
private embedded PostgreSQL, with CRM_* pointing at a temp dir (no user settings are read).
Calls are counted from the emulator's request log.

Reference (a lower bound nobody can beat):
  minimum calls = ceil(rows / 500) insights pages (rows = days x ads; 500 is our page size,
                  `GraphApiResource.page_size`, the largest `limit` we ask Meta for on
                  /insights with level=ad, time_increment=1: Meta documents no fixed cap, only
                  data-per-call limits that fail too-big pages) + the calls of the
                  incremental streams the sync also runs (campaigns, ad sets, ads, lead forms,
                  leads, conversations), counted as made: they are not what B6 measures.
  wall bound    = minimum calls x latency / allowed concurrency, where allowed concurrency is
                  the `graph_api` pool limit of the repo-root dagster.yaml (steps calling Meta at
                  once; the governor adds no concurrency limit of its own).
Targets: wall <= 1.5x bound; calls <= 1.1x minimum. The details split our wall into process
start-up, the streams run, and per insights partition: Dagster run overhead vs HTTP time.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import harness  # first: it puts the repo root on sys.path for crm_pipeline
import psycopg
import yaml
from graph_emulator import EmulatorData, FaultPlan, GraphEmulator

ACCOUNT = "act_1001"
PAGE_ID = "2001"
PAGE_SIZE = 500  # GraphApiResource.page_size: the insights `limit` we ask for
CAMPAIGNS, ADSETS_PER_CAMPAIGN = 5, 10  # 50 ad sets; ads per ad set = ads / 50


def _add(parser) -> None:
    parser.add_argument("--days", type=int, help="days of insights (default 30, quick 3)")
    parser.add_argument(
        "--ads", type=int, help="ads in the account, a multiple of 50 (default 500, quick 50)"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="emulator latency")


def allowed_concurrency() -> int:
    """The `graph_api` pool limit of dagster.yaml: how many steps may call Meta at once."""
    config = yaml.safe_load((harness.ROOT / "dagster.yaml").read_text())
    pools = config["concurrency"]["pools"]
    return int(pools.get("graph_api", pools["default_limit"]))


def product_env(work: Path, database_url: str, graph_url: str) -> dict[str, str]:
    """The process environment minus any user settings, pointed at our temp dirs and emulator."""
    return harness.product_env(
        ("CRM_", "FB_", "DAGSTER_"),
        CRM_DATABASE_URL=database_url,
        CRM_DATA_DIR=str(work / "data"),
        CRM_CACHE_DIR=str(work / "cache"),
        CRM_INSIGHTS_MODE="sync",
        # The bundled emulator, asked for explicitly: the one this benchmark started.
        FB_GRAPH_URL="emulator",
        CRM_EMULATOR_URL=graph_url,
        FB_AD_ACCOUNT_IDS=ACCOUNT,
        FB_PAGE_ID=PAGE_ID,
        NO_PROXY="127.0.0.1,localhost",  # replaces the user's, so loopback skips any proxy
    )


def run_records(data_dir: Path) -> list[dict]:
    """Every Dagster run of the sync (oldest first) with its steps' durations."""
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(data_dir / "dagster"))
    runs = []
    for record in reversed(instance.get_run_records()):
        steps = {
            s.step_key: (s.end_time or 0) - (s.start_time or 0)
            for s in instance.get_run_step_stats(record.dagster_run.run_id)
        }
        runs.append(
            {
                "start": record.start_time,
                "end": record.end_time,
                "created": record.create_timestamp.timestamp(),
                "steps": steps,
            }
        )
    instance.dispose()
    return runs


def sync_dates(days: int) -> tuple[date, date]:
    """(since, until): `days` days ending yesterday (today's partition exists too, but
    yesterday's is final)."""
    until = datetime.now(UTC).date() - timedelta(days=1)
    since = until - timedelta(days=days - 1)
    if since < date(2025, 1, 1):  # the partitions' default start (CRM_INSIGHTS_START_DATE)
        raise SystemExit("--days reaches before 2025-01-01, the first insights partition")
    return since, until


@dataclass
class Sync:
    """What one `crm-pipeline sync facebook` did: its wall time, calls, rows and runs."""

    since: date
    until: date
    started: float
    wall: float
    requests: list
    rows: int
    runs: list[dict]


def run_sync(args, data: EmulatorData, since: date, until: date) -> Sync:
    """Our path: the CLI as a subprocess against the emulator, into a private PostgreSQL."""
    cli = harness.venv_command("crm-pipeline")
    with (
        harness.private_postgres("graph-sync") as (work, new_database),
        GraphEmulator(data, latency_ms=args.latency_ms, faults=FaultPlan()) as emulator,
    ):
        url = new_database("graph_sync")
        env = product_env(work, url, emulator.url)
        cmd = [cli, "sync", "facebook", "--since", str(since), "--until", str(until)]
        started = time.time()
        proc = subprocess.run([*cmd, "--no-cache"], env=env, capture_output=True, text=True)
        wall = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(f"sync failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        requests = emulator.requests
        with psycopg.connect(harness.libpq(url)) as conn:
            rows = conn.execute(
                "SELECT count(*) FROM ad_insights_daily WHERE date BETWEEN %s AND %s",
                (since, until),
            ).fetchone()[0]
        runs = run_records(work / "data")
    # The harness removes the server's files; the Parquet lake and Dagster runs are ours.
    shutil.rmtree(work, ignore_errors=True)
    return Sync(since, until, started, wall, requests, rows, runs)


def wall_breakdown(sync: Sync, insight_calls: int, latency: float) -> dict[str, float]:
    """Our wall split into process start-up, the streams run, the insights runs (launch,
    run, fetch and load steps, HTTP), the gaps between runs and the exit."""
    runs = sync.runs
    # A date range of one account is one run (ranged partitions); the streams are another.
    insight_runs = [r for r in runs if "fb_ad_insights_raw" in r["steps"]]
    stream_runs = [r for r in runs if "fb_ad_insights_raw" not in r["steps"]]

    def total(rs, part) -> float:
        return sum(part(r) for r in rs)

    return {
        "insight_runs": len(insight_runs),
        "launch": total(insight_runs, lambda r: r["start"] - r["created"]),  # record -> started
        "run_time": total(insight_runs, lambda r: r["end"] - r["start"]),
        "fetch": total(insight_runs, lambda r: r["steps"].get("fb_ad_insights_raw", 0)),
        "load": total(insight_runs, lambda r: r["steps"].get("ad_insights_daily", 0)),
        "http": insight_calls * latency,
        # From one run's end to the next run's record: materialize() building the job,
        # checkpoint.
        "between": sum(b["created"] - a["end"] for a, b in zip(runs, runs[1:], strict=False)),
        "streams": total(stream_runs, lambda r: r["end"] - r["created"]),
        "startup": min(r["created"] for r in runs) - sync.started,
        "exit": sync.started + sync.wall - max(r["end"] for r in runs),
    }


def report_sync(args, shape: tuple[int, int], concurrency: int, sync: Sync) -> None:
    """Check the rows, count the calls against the minimum, print (and record) B6."""
    days, ads = shape
    latency = args.latency_ms / 1000
    expected_rows = days * ads
    if sync.rows != expected_rows:
        raise SystemExit(f"wrote {sync.rows} insight rows, expected {expected_rows}")
    insight_calls = sum(1 for r in sync.requests if r.path.endswith("/insights"))
    other_calls = len(sync.requests) - insight_calls
    min_pages = math.ceil(expected_rows / PAGE_SIZE)
    min_calls = min_pages + other_calls
    bound = min_calls * latency / concurrency
    calls, wall = len(sync.requests), sync.wall
    t = wall_breakdown(sync, insight_calls, latency)
    measurements = [
        harness.measure("B6 Graph sync wall", wall, bound, "s", "<= 1.5"),
        harness.measure("B6 Graph sync calls", calls, min_calls, "calls", "<= 1.1"),
    ]
    harness.report(
        f"B6 Graph sync: {days} days x {ads} ads ({ACCOUNT}) at {args.latency_ms:g} ms, "
        f"allowed concurrency {concurrency} (dagster.yaml graph_api pool)",
        measurements,
        args,
        details=[
            f"our path: crm-pipeline sync facebook --since {sync.since} --until {sync.until}"
            " --no-cache (subprocess; one Dagster run for the streams, one per account for the"
            " date range)",
            f"rows written: {sync.rows} (= {days} days x {ads} ads), insights pages (calls):"
            f" {insight_calls}, minimum ceil({expected_rows}/{PAGE_SIZE}) = {min_pages}",
            f"other Graph calls (objects, lead forms, leads, conversations), counted as needed:"
            f" {other_calls}",
            f"bound: {min_calls} calls x {latency * 1000:g} ms / {concurrency} = {bound:.3f} s;"
            f" per-call overhead beyond latency: {(wall - calls * latency) / calls * 1000:.0f} ms",
            f"wall {wall:.1f} s = start-up (process, imports, migrations) {t['startup']:.1f} s"
            f" + streams run {t['streams']:.1f} s + {t['insight_runs']} insights runs"
            f" {t['launch'] + t['run_time']:.1f} s + between runs {t['between']:.1f} s"
            f" + exit {t['exit']:.1f} s",
            f"insights runs: launch {t['launch']:.2f} s + run {t['run_time']:.2f} s"
            f" (fetch step {t['fetch']:.2f} s, of it HTTP {t['http']:.2f} s; DB step"
            f" {t['load']:.2f} s; Dagster outside steps"
            f" {t['run_time'] - t['fetch'] - t['load']:.2f} s)",
            f"HTTP is {t['http'] / wall:.0%} of the wall",
        ],
    )


def main() -> int:
    """Sync `days` x `ads` from the emulator through the CLI, report B6 against its bound."""
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    days = args.days or (3 if args.quick else 30)
    ads = args.ads or (50 if args.quick else 500)
    if ads % (CAMPAIGNS * ADSETS_PER_CAMPAIGN) or days < 1:
        raise SystemExit("--ads must be a positive multiple of 50 and --days positive")
    concurrency = allowed_concurrency()
    since, until = sync_dates(days)
    data = EmulatorData(
        campaigns_per_account=CAMPAIGNS,
        adsets_per_campaign=ADSETS_PER_CAMPAIGN,
        ads_per_adset=ads // (CAMPAIGNS * ADSETS_PER_CAMPAIGN),
    )
    assert len(data.ads(ACCOUNT)) == ads
    sync = run_sync(args, data, since, until)
    report_sync(args, (days, ads), concurrency, sync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
