"""Meta's version warnings and expired versions through real Dagster runs: the warning in the
run's log and the materialisation metadata; the expired version failing the step at once."""

import logging

import dagster as dg
from graph_emulator import EmulatorData, GraphEmulator
from graph_emulator.versions import VersionTable

from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw, fb_ad_objects_raw, fb_leads_raw
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.facebook.ids import sdk_api_version
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import ACCOUNTS, DAYS, resources_for

KEY = insights_partition_key("act_1001", DAYS[0])
# Meta's words for a deprecated version, as the emulator sends them.
WARNING = (
    "The call is from a version of the Ads API which will be deprecated on 2027-02-10. "
    "Please upgrade to v27.0."
)


def with_version(resources: dict, url: str, version: str | None) -> dict:
    graph = GraphApiResource(
        graph_url=url,
        api_version=version,
        ad_account_ids=",".join(ACCOUNTS),
        page_id="2001",
        page_size=10,
    )
    return {**resources, "graph_api": graph}


def warnings_logged(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step, message) of every WARNING-level user log line of the run."""
    return [
        (entry.step_key, entry.user_message)
        for entry in instance.all_logs(run_id)
        if not entry.is_dagster_event and entry.level == logging.WARNING
    ]


def test_a_deprecated_version_warns_in_the_run_log_and_the_metadata(clean_db, database_url, dirs):
    instance = dg.DagsterInstance.ephemeral()
    with GraphEmulator(EmulatorData()) as server:
        resources = with_version(resources_for(database_url, server.url, dirs), server.url, "v25.0")
        result = dg.materialize(
            [fb_ad_insights_raw], partition_key=KEY, resources=resources, instance=instance
        )
        pages = len(server.requests)
    assert result.success
    [raw] = result.asset_materializations_for_node("fb_ad_insights_raw")
    assert raw.metadata["api_warnings"].value == [WARNING]
    # Every page carried the warning; the run's log has it once, as a WARNING of the step.
    assert pages > 1
    logged = [m for _, m in warnings_logged(instance, result.run_id) if "Meta API warning" in m]
    assert logged == [f"Meta API warning (v25.0): {WARNING}"]


def test_the_sdks_own_version_warns_when_meta_deprecates_it(clean_db, database_url, dirs):
    """Unset FB_API_VERSION is the SDK's own; the day Meta deprecates it, every asset says so."""
    instance = dg.DagsterInstance.ephemeral()
    table = VersionTable(current=("v27.0",), deprecated={sdk_api_version(): "2026-09-01"})
    with GraphEmulator(EmulatorData(), versions=table) as server:
        resources = with_version(resources_for(database_url, server.url, dirs), server.url, None)
        result = dg.materialize(
            [fb_ad_objects_raw, fb_leads_raw], resources=resources, instance=instance
        )
    assert result.success
    for node in ("fb_campaigns_raw", "fb_ad_accounts_raw", "fb_leads_raw"):
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key.path == [node]]
        assert mat.materialization.metadata["api_warnings"].value == [
            "The call is from a version of the Ads API which will be deprecated on 2026-09-01. "
            "Please upgrade to v27.0."
        ]
    steps = [step for step, m in warnings_logged(instance, result.run_id) if "Meta API" in m]
    assert sorted(steps) == ["fb_ad_objects_raw", "fb_leads_raw"]  # each step, once


def test_current_versions_add_no_warning(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        resources = with_version(resources_for(database_url, server.url, dirs), server.url, None)
        result = dg.materialize([fb_ad_insights_raw], partition_key=KEY, resources=resources)
    assert result.success
    [raw] = result.asset_materializations_for_node("fb_ad_insights_raw")
    assert "api_warnings" not in raw.metadata


def test_an_expired_version_fails_the_step_at_once_naming_the_fix(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        resources = with_version(resources_for(database_url, server.url, dirs), server.url, "v24.0")
        result = dg.materialize(
            [fb_ad_insights_raw], partition_key=KEY, resources=resources, raise_on_error=False
        )
        requests = len(server.requests)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "Graph API version v24.0 has expired" in message
    assert "set FB_API_VERSION to v27.0" in message
    assert "upgrade facebook-business" in message
    # Neither the governor nor Dagster's RetryPolicy (2 retries) tried again.
    assert requests == 1
    assert not [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
