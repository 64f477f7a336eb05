"""Custom insights end to end: the emulator over HTTP, the real SDK, PostgreSQL and Dagster runs,
and the code location loading (or refusing) a CRM_CUSTOM_INSIGHTS file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.custom_insights import custom_insight_assets
from crm_pipeline.defs.facebook.partitions import (
    insights_partition_key,
    insights_partition_range,
    partition_range_tags,
)
from crm_pipeline.facebook.custom_insights import CustomInsight, load_custom_insights
from crm_pipeline.orchestrate import local_instance_config
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import MalformedData, resources_for

ROOT = Path(__file__).resolve().parents[3]
AGE_GENDER = {
    "table": "fb_custom_age_gender",
    "level": "ad",
    "fields": ["impressions", "clicks", "spend", "reach", "actions"],
    "breakdowns": ["age", "gender"],
    "action_attribution_windows": ["7d_click", "1d_view"],
}
CAMPAIGN_COUNTRY = {
    "table": "fb_custom_campaign_country",
    "level": "campaign",
    "fields": ["impressions", "clicks", "spend"],
    "breakdowns": ["country"],
}
FIRST, LAST = "2026-11-17", "2026-11-19"


@pytest.fixture
def custom_db(clean_db):
    """The session database with no custom table left by an earlier test."""

    def drop():
        with clean_db.begin() as conn:
            names = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'fb\\_custom\\_%'")
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TABLE "{name}"'))

    drop()
    yield clean_db
    drop()


def _entries(*declared: dict) -> list[CustomInsight]:
    return [CustomInsight.model_validate(entry) for entry in declared]


def _range(resources, assets, account="act_1001", first=FIRST, last=LAST, **kwargs):
    return dg.materialize(
        assets,
        tags=partition_range_tags(insights_partition_range(account, first, last)),
        resources=resources,
        **kwargs,
    )


def _all(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql)).all()]


def _snapshot(engine, table: str) -> list[tuple]:
    return _all(engine, f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5, 6, 7")


def _counts(result, table: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for event in result.asset_materializations_for_node(table):
        for name in ("inserted", "updated", "unchanged", "deleted", "rows"):
            totals[name] = totals.get(name, 0) + event.metadata[name].value
    return totals


def test_breakdown_rows_add_up_to_the_built_in_rows_and_a_resync_changes_nothing(
    custom_db, database_url, dirs
):
    entries = _entries(AGE_GENDER, CAMPAIGN_COUNTRY)
    assets = [fb_ad_insights_raw, ad_insights_daily, *custom_insight_assets(entries)]
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        first = _range(resources, assets)
        rows = _snapshot(custom_db, "fb_custom_age_gender")
        second = _range(resources, assets)
    assert first.success and second.success
    built_in = _all(
        custom_db,
        "SELECT ad_id, date, impressions, clicks, spend FROM ad_insights_daily ORDER BY 1, 2",
    )
    ads = len(EmulatorData().ads("act_1001"))
    assert len(built_in) == 3 * ads
    by_ad = _all(
        custom_db,
        "SELECT ad_id, date, sum(impressions), sum(clicks), sum(spend) "
        "FROM fb_custom_age_gender GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert by_ad == built_in
    by_campaign = _all(
        custom_db,
        "SELECT campaign_id, date, sum(impressions), sum(clicks), sum(spend) "
        "FROM ad_insights_daily GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert by_campaign == _all(
        custom_db,
        "SELECT campaign_id, date, sum(impressions), sum(clicks), sum(spend) "
        "FROM fb_custom_campaign_country GROUP BY 1, 2 ORDER BY 1, 2",
    )
    # The breakdowns really split the rows, and each action carries the windows asked for.
    assert len(rows) > len(built_in)
    assert len({(r[5], r[6]) for r in rows}) > 4
    actions = [a for r in rows if r[-2] for a in r[-2]]
    assert actions and all({"7d_click", "1d_view"} <= set(a) for a in actions)
    # A second sync of the same days: the same rows, none inserted, updated or deleted.
    assert _snapshot(custom_db, "fb_custom_age_gender") == rows
    again = _counts(second, "fb_custom_age_gender")
    assert again == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "unchanged": len(rows),
        "rows": len(rows),
    }
    assert _counts(first, "fb_custom_age_gender")["inserted"] == len(rows)
    [check] = [
        c
        for c in second.get_asset_check_evaluations()
        if c.asset_key.path == ["fb_custom_age_gender_raw"]
    ]
    assert check.passed
    landed = dirs["data"] / "raw" / "custom_age_gender" / "account=act_1001" / f"date={FIRST}"
    assert (landed / "part-0.parquet").exists()


def test_rows_meta_no_longer_reports_for_the_account_day_are_deleted(custom_db, database_url, dirs):
    [entry] = _entries(AGE_GENDER)
    assets = custom_insight_assets([entry])
    key = insights_partition_key("act_1001", FIRST)
    stale = (
        "INSERT INTO fb_custom_age_gender (account_id, campaign_id, adset_id, ad_id, date, age,"
        " gender, impressions) VALUES (:account, 'c', 's', :ad, :day, '18-24', 'female', 7)"
    )
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        assert dg.materialize(assets, partition_key=key, resources=resources).success
        reported = _snapshot(custom_db, "fb_custom_age_gender")
        with custom_db.begin() as conn:
            for account, ad, day in [
                ("1001", "gone", FIRST),  # Meta no longer reports it: deleted
                ("1002", "other-account", FIRST),  # another account-day: kept
                ("1001", "other-day", LAST),  # another day: kept
            ]:
                conn.execute(text(stale), {"account": account, "ad": ad, "day": day})
        result = dg.materialize(assets, partition_key=key, resources=resources)
    assert result.success
    assert _counts(result, "fb_custom_age_gender")["deleted"] == 1
    after = _snapshot(custom_db, "fb_custom_age_gender")
    kept = [r for r in after if r[3] in ("other-account", "other-day")]
    assert len(kept) == 2 and not [r for r in after if r[3] == "gone"]
    assert [r for r in after if r not in kept] == reported


def test_malformed_rows_are_quarantined_and_the_account_day_is_not_mirrored(
    custom_db, database_url, dirs
):
    [entry] = _entries(AGE_GENDER)
    assets = custom_insight_assets([entry])
    key = insights_partition_key("act_1001", FIRST)
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        assert dg.materialize(assets, partition_key=key, resources=resources).success
    before = _snapshot(custom_db, "fb_custom_age_gender")
    with GraphEmulator(MalformedData()) as server:  # one ad's rows lack their campaign id
        result = dg.materialize(
            assets, partition_key=key, resources=resources_for(database_url, server.url, dirs)
        )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["quarantined"].value > 0
    [landed] = result.asset_materializations_for_node("fb_custom_age_gender_raw")
    assert landed.metadata["quarantined"].value == check.metadata["quarantined"].value
    assert _counts(result, "fb_custom_age_gender")["deleted"] == 0
    # The rows of the malformed ad stay as they were: not deleted, not overwritten.
    assert _snapshot(custom_db, "fb_custom_age_gender") == before
    partition = f"account=act_1001/date={FIRST}"
    assert lake.quarantine_path(dirs["data"], "custom_age_gender", partition).exists()


def test_a_changed_entry_whose_table_exists_fails_clearly_and_keeps_the_rows(
    custom_db, database_url, dirs
):
    key = insights_partition_key("act_1001", FIRST)
    changed = {**AGE_GENDER, "breakdowns": ["age", "gender", "country"]}
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        assert dg.materialize(
            custom_insight_assets(_entries(AGE_GENDER)), partition_key=key, resources=resources
        ).success
        before = _snapshot(custom_db, "fb_custom_age_gender")
        result = dg.materialize(
            custom_insight_assets(_entries(changed)),
            partition_key=key,
            resources=resources,
            raise_on_error=False,
        )
    assert not result.success
    errors = " ".join(
        e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure
    )
    assert "fb_custom_age_gender exists with other columns" in errors
    assert "missing country" in errors and "RENAME" in errors
    # Only the table step failed: the raw asset landed, and the old rows are untouched.
    assert [e.step_key for e in result.all_events if e.is_step_failure] == ["fb_custom_age_gender"]
    assert _snapshot(custom_db, "fb_custom_age_gender") == before


def test_every_entry_of_the_example_file_syncs_and_each_level_adds_up(
    custom_db, database_url, dirs
):
    entries = load_custom_insights(ROOT / "custom_insights.example.yaml")
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        result = _range(resources, custom_insight_assets(entries), last=FIRST)
    assert result.success
    totals = {
        entry.table: _all(
            custom_db,
            f"SELECT date, sum(impressions), sum(clicks), sum(spend), count(*) FROM {entry.table} "
            "GROUP BY 1",
        )
        for entry in entries
    }
    # Ad by age and gender, campaign by placement, account by country: the same day's totals.
    [(day, impressions, clicks, spend, _)] = totals["fb_custom_ad_age_gender"]
    assert str(day) == FIRST and impressions > 0
    for rows in totals.values():
        assert [r[:4] for r in rows] == [(day, impressions, clicks, spend)] and rows[0][4] > 1
    placements = _all(
        custom_db,
        "SELECT DISTINCT campaign_name, publisher_platform, platform_position "
        "FROM fb_custom_campaign_placements",
    )
    assert all(name and platform and position for name, platform, position in placements)
    conversions = [
        entry
        for (value,) in _all(custom_db, "SELECT conversions FROM fb_custom_account_countries")
        for entry in value or []
    ]
    assert conversions
    assert all({"action_device", "1d_click", "28d_click"} <= set(c) for c in conversions)


def _load_in_a_new_process(custom_file: Path, tmp_path: Path, script: str):
    env = {
        **os.environ,
        "CRM_CUSTOM_INSIGHTS": str(custom_file),
        "FB_GRAPH_URL": "emulator",
        "FB_AD_ACCOUNT_IDS": "act_1001,act_1002",
        "CRM_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


INSPECT = """
import datetime as dt, json
import dagster as dg
from crm_pipeline.definitions import defs
from crm_pipeline import orchestrate
from crm_pipeline.defs.sync_schedules import hourly_facebook_sync

when = dt.datetime(2026, 11, 24, 13, tzinfo=dt.UTC)
requests = list(hourly_facebook_sync(dg.build_schedule_context(scheduled_execution_time=when)))
graph = defs.resolve_asset_graph()
custom = [k for k in graph.get_all_asset_keys() if k.to_user_string().startswith("fb_custom_")]
print(json.dumps({
    "assets": {
        k.to_user_string(): [graph.get(k).group_name, graph.get(k).freshness_policy is not None]
        for k in custom
    },
    "hourly": sorted({k.to_user_string() for r in requests for k in r.asset_selection or []}),
    "job": sorted(
        k.to_user_string()
        for k in defs.resolve_job_def("facebook_insights_job").asset_layer.selected_asset_keys
    ),
    "cli": sorted(k.to_user_string() for a in orchestrate.INSIGHT_ASSETS for k in a.keys),
}))
"""


@pytest.mark.slow
def test_the_code_location_schedules_each_entry_with_the_built_in_insights(tmp_path):
    path = tmp_path / "custom_insights.yaml"
    path.write_text(yaml.safe_dump([AGE_GENDER]))
    result = _load_in_a_new_process(path, tmp_path, INSPECT)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    pair = {"fb_custom_age_gender_raw", "fb_custom_age_gender"}
    assert loaded["assets"] == {
        "fb_custom_age_gender_raw": ["facebook_raw", True],
        "fb_custom_age_gender": ["facebook", True],
    }
    assert pair <= set(loaded["hourly"])  # the hourly schedule's insights runs
    assert pair | {"fb_ad_insights_raw", "ad_insights_daily"} <= set(loaded["job"])  # re-sync
    assert pair <= set(loaded["cli"])  # crm-pipeline sync facebook


@pytest.mark.slow
def test_an_invalid_file_fails_dagster_definitions_validate_with_the_message(tmp_path):
    path = tmp_path / "custom_insights.yaml"
    path.write_text(yaml.safe_dump([{**AGE_GENDER, "action_attribution_windows": ["7d_view"]}]))
    (tmp_path / "dagster.yaml").write_text(local_instance_config())
    dagster = Path(sys.executable).with_name("dagster")
    env = {
        **os.environ,
        "CRM_CUSTOM_INSIGHTS": str(path),
        "FB_GRAPH_URL": "emulator",
        "FB_AD_ACCOUNT_IDS": "act_1001,act_1002",
        "DAGSTER_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"CRM_CUSTOM_INSIGHTS file {path} is not valid" in output
    assert "entry 1 (table fb_custom_age_gender)" in output and "2026-01-12" in output
