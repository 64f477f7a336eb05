"""Insight ranges: one run and one query per stretch of days, checkpoints, resumes."""

import datetime as dt
import math

import dagster as dg
import pyarrow.parquet as pq
import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline import orchestrate
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    ACCOUNTS,
    DAYS,
    insight_runs,
    insight_windows,
    range_run,
    resources_for,
    sync,
)


def test_a_month_of_one_account_is_one_run_and_the_minimum_of_calls(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 30))
    data = EmulatorData()
    instance = dg.DagsterInstance.ephemeral()
    with GraphEmulator(data) as server:
        report = sync(database_url, server, dirs, days, instance)
        windows = insight_windows(server)
    expected = data.insights("act_1001", dt.date(2026, 10, 1), dt.date(2026, 10, 30))
    runs = insight_runs(instance)
    assert len(runs) == 1, "the 30 account-days ran as one Dagster run"
    assert len(instance.get_runs()) == 2  # and the streams run
    assert runs[0].tags["dagster/asset_partition_range_start"] == "act_1001|2026-10-01"
    assert runs[0].tags["dagster/asset_partition_range_end"] == "act_1001|2026-10-30"
    assert len(windows) == math.ceil(len(expected) / 10)  # one query, paged: no extra call
    assert set(windows) == {("act_1001", days[0], days[-1])}
    assert report.insight_rows == report.inserted == len(expected)
    assert report.resumed == 0
    # Every account-day is its own materialisation with its own counts.
    mats = instance.fetch_materializations(dg.AssetKey("ad_insights_daily"), limit=100).records
    by_day = {
        r.partition_key.split("|")[1]: r.asset_materialization.metadata["rows"].value for r in mats
    }
    assert by_day == {d: len(expected) // len(days) for d in days}
    with clean_db.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*), count(DISTINCT date) FROM ad_insights_daily")
        ).one()
    assert tuple(stored) == (len(expected), len(days))


def test_a_resumed_range_skips_checkpointed_days(clean_db, database_url, dirs, monkeypatch):
    from crm_pipeline.db.sync_state import put_state

    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 10))
    scope = f"{days[0]}..{days[-1]}|act_1001"
    finished = days[3:6]  # what an earlier, interrupted run of the same command had done
    with clean_db.begin() as conn:
        put_state(
            conn,
            orchestrate.CHECKPOINT_STREAM,
            scope,
            {"done": [f"act_1001|{d}" for d in finished]},
        )
    instance = dg.DagsterInstance.ephemeral()
    with GraphEmulator(EmulatorData()) as server:
        report = sync(database_url, server, dirs, days, instance)
        windows = insight_windows(server)
    assert report.resumed == 3
    # The days left form two stretches: one run and one query each.
    assert set(windows) == {("act_1001", days[0], days[2]), ("act_1001", days[6], days[9])}
    assert len(insight_runs(instance)) == 2
    with clean_db.connect() as conn:
        stored = {
            d.isoformat()
            for (d,) in conn.execute(text("SELECT DISTINCT date FROM ad_insights_daily"))
        }
        left = conn.execute(
            text("SELECT count(*) FROM sync_state WHERE stream = 'cli_insights_sync'")
        ).scalar_one()
    assert stored == set(days) - set(finished)
    assert left == 0


class _QuietDay(EmulatorData):
    """Meta reports nothing for one day (the ads were paused, or the rows were revised away)."""

    quiet = dt.date(2026, 10, 2)

    def served_insights(self, account_id, since, until):
        return [
            r
            for r in super().insights(account_id, since, until)
            if r["date_start"] != self.quiet.isoformat()
        ]


def test_a_day_meta_no_longer_reports_is_emptied_in_a_range(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 3))
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs, days)
    with GraphEmulator(_QuietDay()) as server:
        report = sync(database_url, server, dirs, days)
    with clean_db.connect() as conn:
        per_day = dict(
            conn.execute(
                text("SELECT date::text, count(*) FROM ad_insights_daily GROUP BY date")
            ).all()
        )
    ads = len(EmulatorData().ads("act_1001"))
    assert per_day == {days[0]: ads, days[2]: ads}
    assert report.insight_rows == 2 * ads
    quiet = dirs["data"] / "raw" / "fb_ad_insights" / "account=act_1001" / f"date={days[1]}"
    assert pq.read_table(quiet / "part-0.parquet").num_rows == 0


class _OneAdGone(EmulatorData):
    """Meta stops reporting one ad on one day; its other ads and days are reported as before."""

    day = dt.date(2026, 10, 2)

    def served_insights(self, account_id, since, until):
        gone = self.ads(account_id)[0]["id"]
        return [
            r
            for r in super().insights(account_id, since, until)
            if not (r["date_start"] == self.day.isoformat() and r["ad_id"] == gone)
        ]


def test_an_ad_meta_no_longer_reports_on_a_day_is_deleted_and_only_it(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 3))
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs, days)
    query = text("SELECT date::text, ad_id FROM ad_insights_daily")
    with clean_db.connect() as conn:
        before = set(conn.execute(query).all())
    with GraphEmulator(_OneAdGone()) as server:
        sync(database_url, server, dirs, days)
    with clean_db.connect() as conn:
        after = set(conn.execute(query).all())
    gone = EmulatorData().ads("act_1001")[0]["id"]
    assert before - after == {(_OneAdGone.day.isoformat(), gone)}
    assert after <= before


def test_resume_from_checkpoint_after_the_wait_budget_runs_out(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "1")
    faults = FaultPlan()
    # Meta asks for 5 minutes: past the budget, so the run ends with a clear message.
    faults.add(
        Fault(kind="throttle", code=80000, eta_minutes=5, count=50, path="act_1002/insights")
    )
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        with pytest.raises(orchestrate.RunFailed, match="(?i)wait|budget|rate"):
            sync(database_url, server, dirs)
        first = set(insight_windows(server))
        with clean_db.connect() as conn:
            checkpoint = conn.execute(
                text("SELECT state FROM sync_state WHERE stream = 'cli_insights_sync'")
            ).scalar_one()
        faults.remaining.clear()
        server.reset_requests()
        report = sync(database_url, server, dirs)
        second = insight_windows(server)
    # act_1001's days finished (one query for both) before the throttle ended act_1002's run;
    # the failed run's days are not marked done.
    assert ("act_1001", DAYS[0], DAYS[-1]) in first
    assert checkpoint == {"done": [f"act_1001|{d}" for d in DAYS]}
    assert report.resumed == 2
    assert set(second) == {("act_1002", DAYS[0], DAYS[-1])}, "a finished day was fetched again"
    with clean_db.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM sync_state WHERE stream = 'cli_insights_sync'")
            ).scalar_one()
            == 0
        )
        rows = conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one()
    assert rows == sum(
        len(EmulatorData().insights(a, dt.date.fromisoformat(d), dt.date.fromisoformat(d)))
        for a in ACCOUNTS
        for d in DAYS
    )


def test_a_long_range_is_read_in_windows_of_at_most_the_configured_days(
    clean_db, database_url, dirs
):
    resources = resources_for(database_url, None, dirs)
    with GraphEmulator(EmulatorData()) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url, ad_account_ids="act_1001", insights_days_per_query=2
        )
        assert range_run(resources, "act_1001", "2026-10-01", "2026-10-05").success
        windows = insight_windows(server)
    assert windows == [
        ("act_1001", "2026-10-01", "2026-10-02"),
        ("act_1001", "2026-10-03", "2026-10-04"),
        ("act_1001", "2026-10-05", "2026-10-05"),
    ]
