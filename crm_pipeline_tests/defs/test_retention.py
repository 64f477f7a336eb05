"""`personal_data_retention` materialised for real, and the loads after a prune.

The asset runs on a real PostgreSQL with the project's resources; the settings come from the
environment as in production. The loads are run against the bundled emulator.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import pyarrow as pa
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.defs.crm.assets import leads
from crm_pipeline.defs.facebook.assets import fb_leads_raw
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.defs.retention import personal_data_retention
from crm_pipeline.lake.retention import prune_raw
from crm_pipeline_tests.db.test_inbox_retention import _keys, _store

NOW = dt.datetime.now(dt.UTC)
EMAIL = "retained.person@example.com"


def _resources(database_url, dirs) -> dict:
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }


def _days_ago(days: int) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def _aged(path, days: int):
    os.utime(path, (_days_ago(days).timestamp(), _days_ago(days).timestamp()))
    return path


def _land_personal_data(data) -> dict[str, object]:
    """Raw files 15 and 3 days old, of a personal stream and of the insights."""
    person = pa.table({"id": ["l1"], "email": [EMAIL]})
    ads = pa.table({"ad_id": ["a"]})
    bad = [{"reason": "no id", "record": {"email": EMAIL}}]
    day = "account=act_1/date=2026-01-0{}"
    return {
        "old_sync": lake.land_sync(data, "leads", person, synced_at=_days_ago(15)),
        "new_sync": lake.land_sync(data, "leads", person, synced_at=_days_ago(3)),
        "old_day": _aged(lake.land_partition(data, "fb_ad_insights", day.format(1), ads), 15),
        "new_day": _aged(lake.land_partition(data, "fb_ad_insights", day.format(2), ads), 3),
        "old_bad": _aged(lake.write_quarantine(data, "leads", "latest", bad), 15),
    }


def test_the_asset_removes_what_is_past_each_retention_and_reports_counts_only(
    clean_db, database_url, dirs, monkeypatch
):
    # Shorter than the defaults (30): what goes proves the settings reach the run.
    monkeypatch.setenv("CRM_RAW_RETENTION_DAYS", "10")
    monkeypatch.setenv("CRM_INBOX_RETENTION_DAYS", "7")
    files = _land_personal_data(dirs["data"])
    sizes = {name: path.stat().st_size for name, path in files.items()}
    _store(clean_db, "handled-8-days-ago", received=8, processed=8)
    _store(clean_db, "handled-3-days-ago", received=3, processed=3)
    _store(clean_db, "pending-90-days", received=90)
    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize(
        [personal_data_retention], resources=_resources(database_url, dirs), instance=instance
    )

    assert result.success
    assert [name for name, path in files.items() if path.exists()] == ["new_sync", "new_day"]
    assert _keys(clean_db) == {"handled-3-days-ago", "pending-90-days"}
    [materialization] = result.asset_materializations_for_node("personal_data_retention")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["raw_retention_days"] == 10 and metadata["inbox_retention_days"] == 7
    assert metadata["raw_files_removed"] == 2
    assert metadata["raw_bytes_removed"] == sizes["old_sync"] + sizes["old_day"]
    assert (metadata["quarantine_files_removed"], metadata["inbox_rows_removed"]) == (1, 1)
    assert metadata["removed_by_stream"] == {
        "fb_ad_insights": {
            "files": 1,
            "bytes": sizes["old_day"],
            "quarantine_files": 0,
            "quarantine_bytes": 0,
        },
        "leads": {
            "files": 1,
            "bytes": sizes["old_sync"],
            "quarantine_files": 1,
            "quarantine_bytes": sizes["old_bad"],
        },
    }
    # No personal value in the metadata, the logs or any event of the run.
    for entry in instance.all_logs(result.run_id):
        assert EMAIL not in str(entry) and "handled-8-days-ago" not in str(entry)


def test_the_defaults_keep_a_month(clean_db, database_url, dirs):
    files = _land_personal_data(dirs["data"])
    _store(clean_db, "handled-8-days-ago", received=8, processed=8)
    result = dg.materialize([personal_data_retention], resources=_resources(database_url, dirs))
    assert result.success
    assert all(path.exists() for path in files.values())
    assert _keys(clean_db) == {"handled-8-days-ago"}


def _leads_state(engine) -> tuple:
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM leads")).scalar_one()
        marks = conn.execute(
            text("SELECT scope, state FROM sync_state WHERE stream = 'leads' ORDER BY scope")
        ).all()
    return count, [tuple(mark) for mark in marks]


def test_a_load_whose_syncs_were_pruned_fails_clearly_and_changes_nothing(
    clean_db, database_url, dirs, emulator
):
    """The leads load reads the newest sync: once the retention removed every sync, it fails
    naming the cause, and neither the table nor its watermark moves (backwards or at all)."""
    resources = {
        **_resources(database_url, dirs),
        "graph_api": GraphApiResource(
            graph_url=emulator.url, ad_account_ids="act_1001", page_id=emulator.data.page_id
        ),
    }
    assert dg.materialize([fb_leads_raw, leads], resources=resources).success
    loaded = _leads_state(clean_db)
    assert loaded[0] > 0 and loaded[1]
    report = prune_raw(dirs["data"], dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    assert report.raw["leads"].files == 1

    result = dg.materialize([leads], resources=resources, raise_on_error=False)

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "CRM_RAW_RETENTION_DAYS" in failure.event_specific_data.error.to_string()
    assert _leads_state(clean_db) == loaded
    # The next sync lands anew from the watermark, and the load goes on from there.
    assert dg.materialize([fb_leads_raw, leads], resources=resources).success
    assert _leads_state(clean_db) == loaded
