"""B6: `crm-pipeline sync facebook` through the Graph emulator: one account, and 20 at once.

    .venv/bin/python benchmarks/graph_sync.py [--quick] [--only one|many]
        [--accounts N --days D --ads A --latency-ms L]   # one custom scenario instead

Two scenarios, each a row group:
  B6       1 account  x 30 days x 500 ads, every answer delayed 50 ms;
  B6 many  20 accounts x 30 days x 500 ads at 300 ms (an agency's accounts at Meta's latency).
Our path is what a user runs: `crm-pipeline sync facebook --since D1 --until Dn --no-cache` as a
subprocess (caches are not Graph sync), against ad accounts `act_1001`.. of the bundled emulator
running in this process, into a private embedded PostgreSQL, with CRM_* pointing at a temp dir
(no user settings are read). The emulator's insight numbers are computed before the clock starts
(a real Graph server has them stored). Calls are counted from the emulator's request log.

Reference (a lower bound nobody can beat):
  minimum calls = per account, ceil(days x ads / 500) insights pages (500 is our page size,
                  `GraphApiResource.page_size`, the largest `limit` we ask Meta for on /insights
                  with level=ad, time_increment=1: Meta documents no fixed cap, only data-per-call
                  limits that fail too-big pages) + one call per query window for Meta's
                  account totals (level=account, the reconcile check) + the calls of the
                  incremental streams the sync also runs (ad accounts, campaigns, ad sets, ads,
                  the Page token, lead forms, leads, conversations), counted as made: they are
                  not what B6 measures.
  wall bound    = minimum calls x latency / allowed concurrency, where allowed concurrency is
                  what the rate-limit governor lets be in flight: min(accounts x
                  CRM_GRAPH_CALLS_PER_ACCOUNT, CRM_GRAPH_MAX_CALLS_IN_FLIGHT), at their defaults.
Targets: wall <= 1.5x bound; calls <= 1.1x minimum. The details split our wall into process
start-up, the streams run, and the insights run: Dagster run overhead vs HTTP time.
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
from graph_emulator import EmulatorData, FaultPlan, GraphEmulator

PAGE_ID = "2001"
PAGE_SIZE = 500  # GraphApiResource.page_size: the insights `limit` we ask for
DAYS_PER_QUERY = 31  # GraphApiResource.insights_days_per_query: one totals call per window
CAMPAIGNS, ADSETS_PER_CAMPAIGN = 5, 10  # 50 ad sets; ads per ad set = ads / 50


@dataclass(frozen=True)
class Scenario:
    """One row group: how many accounts, days and ads, at what latency."""

    label: str
    accounts: int
    days: int
    ads: int
    latency_ms: float
    # "local": Dagster's local storage under CRM_DATA_DIR (what `make demo` uses); "production":
    # the repo's dagster.yaml as DAGSTER_HOME, its runs and events in PostgreSQL (DAGSTER_PG_URL),
    # as an agency's deployment runs the sync.
    instance: str = "local"

    @property
    def account_ids(self) -> list[str]:
        return [f"act_{1001 + n}" for n in range(self.accounts)]


INSTANCES = {
    "local": "Dagster's local SQLite storage under CRM_DATA_DIR",
    "production": "production instance: the repo's dagster.yaml as DAGSTER_HOME, PostgreSQL",
}
# (full size, quick size) of each scenario.
SCENARIOS = {
    "one": (Scenario("B6", 1, 30, 500, 50.0), Scenario("B6", 1, 3, 50, 50.0)),
    "many": (
        Scenario("B6 many accounts", 20, 30, 500, 300.0, "production"),
        Scenario("B6 many accounts", 4, 3, 50, 300.0, "production"),
    ),
}


def _add(parser) -> None:
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="one of the two scenarios")
    parser.add_argument("--accounts", type=int, help="a custom scenario: ad accounts")
    parser.add_argument("--days", type=int, help="a custom scenario: days of insights")
    parser.add_argument("--ads", type=int, help="a custom scenario: ads per account (x 50)")
    parser.add_argument("--latency-ms", type=float, help="a custom scenario: emulator latency")


def allowed_concurrency(accounts: int) -> int:
    """Graph requests the governor lets be in flight at once for `accounts` accounts, at the
    defaults of CRM_GRAPH_CALLS_PER_ACCOUNT and CRM_GRAPH_MAX_CALLS_IN_FLIGHT (the benchmark
    runs the product without user settings)."""
    from crm_pipeline.config_groups import GraphSettings

    fields = GraphSettings.model_fields
    per_account = int(fields["calls_per_account"].default)
    in_flight = int(fields["max_calls_in_flight"].default)
    return min(accounts * per_account, in_flight)


def product_env(
    work: Path, database_url: str, graph_url: str, accounts: list[str]
) -> dict[str, str]:
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
        FB_AD_ACCOUNT_IDS=",".join(accounts),
        FB_PAGE_ID=PAGE_ID,
        NO_PROXY="127.0.0.1,localhost",  # replaces the user's, so loopback skips any proxy
    )


def production_instance(work: Path, database_url: str) -> dict[str, str]:
    """DAGSTER_HOME holding the repo's dagster.yaml, and DAGSTER_PG_URL (psycopg2, as
    dagster-postgres needs) for its storage: the documented production instance."""
    home = work / "dagster-home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(harness.ROOT / "dagster.yaml", home / "dagster.yaml")
    pg_url = database_url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)
    return {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": pg_url}


def run_records(home: Path, env: dict[str, str]) -> list[dict]:
    """Every Dagster run of the sync (oldest first) with its steps' durations."""
    import os

    from dagster import DagsterInstance

    saved = os.environ.get("DAGSTER_PG_URL")
    if "DAGSTER_PG_URL" in env:  # the production instance's dagster.yaml reads it
        os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    try:
        instance = DagsterInstance.from_config(str(home))
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = saved
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


def run_sync(scenario: Scenario, data: EmulatorData, since: date, until: date) -> Sync:
    """Our path: the CLI as a subprocess against the emulator, into a private PostgreSQL."""
    cli = harness.venv_command("crm-pipeline")
    latency_ms = scenario.latency_ms
    with (
        harness.private_postgres("graph-sync") as (work, new_database),
        GraphEmulator(data, latency_ms=latency_ms, faults=FaultPlan()) as emulator,
    ):
        url = new_database("graph_sync")
        env = product_env(work, url, emulator.url, scenario.account_ids)
        if scenario.instance == "production":
            env.update(production_instance(work, new_database("dagster", migrated=False)))
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
        runs = run_records(Path(env.get("DAGSTER_HOME") or work / "data" / "dagster"), env)
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
        # The streams run goes beside the insights on a PostgreSQL instance: runs may overlap.
        "span": max(r["end"] for r in runs) - min(r["created"] for r in runs),
        "overlap": any(b["created"] < a["end"] for a, b in zip(runs, runs[1:], strict=False)),
        "streams": total(stream_runs, lambda r: r["end"] - r["created"]),
        "startup": min(r["created"] for r in runs) - sync.started,
        "exit": sync.started + sync.wall - max(r["end"] for r in runs),
    }


def report_sync(args, scenario: Scenario, sync: Sync) -> None:
    """Check the rows, count the calls against the minimum, print (and record) the rows."""
    days, ads, accounts = scenario.days, scenario.ads, scenario.accounts
    concurrency = allowed_concurrency(accounts)
    latency = scenario.latency_ms / 1000
    expected_rows = accounts * days * ads
    if sync.rows != expected_rows:
        raise SystemExit(f"wrote {sync.rows} insight rows, expected {expected_rows}")
    insight_calls = sum(1 for r in sync.requests if r.path.endswith("/insights"))
    other_calls = len(sync.requests) - insight_calls
    min_pages = accounts * math.ceil(days * ads / PAGE_SIZE)
    totals_calls = accounts * math.ceil(days / DAYS_PER_QUERY)
    min_calls = min_pages + totals_calls + other_calls
    bound = min_calls * latency / concurrency
    calls, wall = len(sync.requests), sync.wall
    t = wall_breakdown(sync, insight_calls, latency)
    measurements = [
        harness.measure(f"{scenario.label} Graph sync wall", wall, bound, "s", "<= 1.5"),
        harness.measure(f"{scenario.label} Graph sync calls", calls, min_calls, "calls", "<= 1.1"),
    ]
    names = scenario.account_ids
    harness.report(
        f"{scenario.label} Graph sync: {accounts} account(s) ({names[0]}..{names[-1]}) x "
        f"{days} days x {ads} ads at {scenario.latency_ms:g} ms, allowed concurrency "
        f"{concurrency} (governor: min(accounts x calls per account, calls in flight))",
        measurements,
        args,
        details=[
            f"our path: crm-pipeline sync facebook --since {sync.since} --until {sync.until}"
            " --no-cache (subprocess; one Dagster run for the streams, one for every account's"
            f" date range; {INSTANCES[scenario.instance]})",
            f"rows written: {sync.rows} (= {accounts} x {days} days x {ads} ads), insights"
            f" calls: {insight_calls}, minimum {accounts} x ceil({days * ads}/{PAGE_SIZE}) pages"
            f" = {min_pages} + {totals_calls} account-totals call(s)",
            f"other Graph calls (objects, lead forms, leads, conversations), counted as needed:"
            f" {other_calls}",
            f"bound: {min_calls} calls x {latency * 1000:g} ms / {concurrency} = {bound:.3f} s;"
            f" concurrency achieved over the wall: {calls * latency / wall:.1f}",
            f"wall {wall:.1f} s = start-up (process, imports, migrations) {t['startup']:.1f} s"
            f" + runs {t['span']:.1f} s (streams run {t['streams']:.1f} s"
            f" {'beside' if t['overlap'] else 'before'} {t['insight_runs']} insights run(s)"
            f" {t['launch'] + t['run_time']:.1f} s) + exit {t['exit']:.1f} s",
            f"insights runs: launch {t['launch']:.2f} s + run {t['run_time']:.2f} s"
            f" (fetch step {t['fetch']:.2f} s, its calls at the bound"
            f" {t['http'] / concurrency:.2f} s; DB step"
            f" {t['load']:.2f} s; Dagster outside steps"
            f" {t['run_time'] - t['fetch'] - t['load']:.2f} s)",
        ],
    )


def scenarios(args) -> list[Scenario]:
    """The scenarios to run: both (full or quick sizes), one (--only), or a custom one."""
    custom = (args.accounts, args.days, args.ads, args.latency_ms)
    if any(v is not None for v in custom):
        base = SCENARIOS[args.only or "one"][1 if args.quick else 0]
        return [
            Scenario(
                f"{base.label} (custom)",
                args.accounts or base.accounts,
                args.days or base.days,
                args.ads or base.ads,
                args.latency_ms if args.latency_ms is not None else base.latency_ms,
            )
        ]
    chosen = [args.only] if args.only else list(SCENARIOS)
    return [SCENARIOS[name][1 if args.quick else 0] for name in chosen]


def run_scenario(args, scenario: Scenario) -> None:
    """Build the emulator's accounts, compute their numbers, sync, report."""
    per_adset = scenario.ads // (CAMPAIGNS * ADSETS_PER_CAMPAIGN)
    if scenario.ads % (CAMPAIGNS * ADSETS_PER_CAMPAIGN) or scenario.days < 1 or per_adset < 1:
        raise SystemExit("--ads must be a positive multiple of 50 and --days positive")
    since, until = sync_dates(scenario.days)
    data = EmulatorData(
        accounts=max(2, scenario.accounts),
        campaigns_per_account=CAMPAIGNS,
        adsets_per_campaign=ADSETS_PER_CAMPAIGN,
        ads_per_adset=per_adset,
    )
    for account in scenario.account_ids:
        assert len(data.ads(account)) == scenario.ads
        data.prepare_insights(account, since, until)
    sync = run_sync(scenario, data, since, until)
    report_sync(args, scenario, sync)


def main() -> int:
    """Sync each scenario from the emulator through the CLI, report B6 against its bounds."""
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    for scenario in scenarios(args):
        run_scenario(args, scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main())
