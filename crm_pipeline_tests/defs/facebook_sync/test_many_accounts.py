"""Many ad accounts at once: one run over every account, accounts read side by side within the
governor's limits, one account's failure not holding back the others."""

import datetime as dt
import shutil

import dagster as dg
import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crm_pipeline import lake, orchestrate
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import INSIGHTS_STREAM, fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import accounts_partition_range, partition_range_tags
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    ACCOUNTS,
    DAYS,
    resources_for,
    sync,
)

# Long enough that two accounts' first requests are surely answered at the same time.
LATENCY_MS = 300


def _range_run(resources) -> dg.ExecuteInProcessResult:
    """Both accounts' DAYS as one run (accounts x days), as a schedule tick asks for."""
    return dg.materialize(
        [fb_ad_insights_raw, ad_insights_daily],
        resources=resources,
        tags=partition_range_tags(accounts_partition_range(ACCOUNTS, DAYS[0], DAYS[-1])),
        raise_on_error=False,
    )


def test_accounts_are_read_at_once_one_request_per_account(clean_db, database_url, dirs):
    data = EmulatorData()
    with GraphEmulator(data, latency_ms=LATENCY_MS) as server:
        result = _range_run(resources_for(database_url, server.url, dirs))
        most, per_account = server.most_in_flight(), [server.most_in_flight(a) for a in ACCOUNTS]
    assert result.success
    assert most == len(ACCOUNTS), "the accounts' requests were not in flight together"
    assert per_account == [1, 1], "more than one request in flight on one account"
    with clean_db.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT account_id, count(*) FROM ad_insights_daily GROUP BY account_id")
            ).all()
        )
    first, last = dt.date.fromisoformat(DAYS[0]), dt.date.fromisoformat(DAYS[-1])
    assert stored == {a.removeprefix("act_"): len(data.insights(a, first, last)) for a in ACCOUNTS}


def test_the_app_wide_limit_holds_across_accounts(clean_db, database_url, dirs, monkeypatch):
    monkeypatch.setenv("CRM_GRAPH_MAX_CALLS_IN_FLIGHT", "1")
    with GraphEmulator(EmulatorData(), latency_ms=LATENCY_MS) as server:
        result = _range_run(resources_for(database_url, server.url, dirs))
        most = server.most_in_flight()
    assert result.success
    assert most == 1


def test_one_failing_account_does_not_stop_the_others_landing(clean_db, database_url, dirs):
    faults = FaultPlan()
    # A permission error on one account: settled, so the run fails at once, naming it.
    faults.add(Fault(kind="permission", count=50, path="act_1002/insights"))
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        result = _range_run(resources_for(database_url, server.url, dirs))
    assert not result.success
    failure = result.failure_data_for_node("fb_ad_insights_raw")
    assert failure is not None and "act_1002" in str(failure.error.message)
    # The other account was read to its end and landed; nothing of the run reached the DB.
    data_dir = dirs["data"]
    for day in DAYS:
        table = lake.read_partition(data_dir, INSIGHTS_STREAM, f"account=act_1001/date={day}")
        assert table.num_rows > 0
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one() == 0


def test_the_sync_command_lands_the_other_accounts_when_one_fails(clean_db, database_url, dirs):
    faults = FaultPlan()
    faults.add(Fault(kind="permission", count=50, path="act_1002/insights"))
    with (
        GraphEmulator(EmulatorData(), faults=faults) as server,
        pytest.raises(orchestrate.RunFailed, match="act_1002"),
    ):
        sync(database_url, server, dirs)
    with clean_db.connect() as conn:
        stored = conn.execute(
            text("SELECT DISTINCT account_id FROM ad_insights_daily ORDER BY 1")
        ).scalars()
        assert list(stored) == ["1001"]


def _postgres_instance(home, database_url: str, monkeypatch) -> dg.DagsterInstance:
    """The production instance (the repo's dagster.yaml, storage in PostgreSQL)."""
    home.mkdir()
    shutil.copy(orchestrate.REPO_INSTANCE_CONFIG, home / "dagster.yaml")
    pg_url = make_url(database_url).set(drivername="postgresql+psycopg2")
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url.render_as_string(hide_password=False))
    return dg.DagsterInstance.from_config(str(home))


def test_the_streams_run_beside_the_insights_on_a_postgres_instance(
    clean_db, database_url, fresh_database_url, dirs, tmp_path, monkeypatch
):
    with (
        _postgres_instance(tmp_path / "home", fresh_database_url, monkeypatch) as instance,
        GraphEmulator(EmulatorData(), latency_ms=LATENCY_MS) as server,
    ):
        report = sync(database_url, server, dirs, instance=instance)
        records = instance.get_run_records()
    assert report.insight_rows > 0
    insights = [r for r in records if "dagster/asset_partition_range_start" in r.dagster_run.tags]
    streams = [r for r in records if r not in insights]
    assert len(insights) == 1 and len(streams) == 1
    a, b = insights[0], streams[0]
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the runs did not overlap"
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ads")).scalar_one() > 0
