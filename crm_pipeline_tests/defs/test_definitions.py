import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from crm_pipeline.cache import registry
from crm_pipeline.definitions import defs
from crm_pipeline.defs import groups
from crm_pipeline.orchestrate import local_instance_config

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_graph_shape_kinds_schedule_and_sensor():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "fb_ad_insights_raw",
        "ad_insights_daily",
        "marketing_insights_cache",
        "analytics_summary",
        "customers",
        "orders",
    } <= keys

    kinds = set()
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, f"{spec.key} has no description"
        assert spec.group_name, f"{spec.key} has no group"
        kinds |= set(spec.kinds)
    assert {"facebook", "parquet", "postgres", "json"} <= kinds

    upstream = lambda name: {  # noqa: E731
        k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys
    }
    assert upstream("ad_insights_daily") == {"fb_ad_insights_raw"}
    # A cache asset's lineage is exactly what its builder reads, as the registry says.
    for file in registry.FILES:
        assert upstream(file.asset) == set(file.reads), file.asset
    assert {"ad_insights_daily", "campaigns"} == upstream("marketing_insights_cache")
    assert {"customers", "orders", "leads", "ads"} <= upstream("analytics_summary")

    schedules = list(defs.schedules)
    hourly = [s for s in schedules if s.cron_schedule == "0 * * * *"]
    assert len(hourly) == 1
    assert {s.name for s in schedules} == {
        "hourly_facebook_sync",
        "daily_attribution_resync",
        "daily_personal_data_retention",
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules)
    sensors = list(defs.sensors)
    assert sensors and all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors)


def test_personal_data_retention_runs_daily_on_its_own_and_is_held_to_it():
    schedule = defs.resolve_schedule_def("daily_personal_data_retention")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 4 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(schedule.job_name)
    assert job.asset_layer.selected_asset_keys == {dg.AssetKey("personal_data_retention")}
    node = defs.resolve_asset_graph().get(dg.AssetKey("personal_data_retention"))
    assert node.group_name == groups.PRIVACY
    # A retention that stopped running is personal data kept past its time: the UI says so.
    assert node.freshness_policy is not None
    assert node.parent_keys == set()  # it reads no asset: it runs whatever the syncs did


def test_dagster_cli_validates_the_workspace(tmp_path):
    """As a developer runs it: on a checkout's local instance (the repo-root dagster.yaml is the
    production one and needs DAGSTER_PG_URL)."""
    dagster = Path(sys.executable).with_name("dagster")
    (tmp_path / "dagster.yaml").write_text(local_instance_config())
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_groups_separate_meta_data_from_crm_tables():
    graph = defs.resolve_asset_graph()
    group = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {name for name, g in group.items() if g == groups.CRM} == {
        "customers",
        "orders",
        "local_db_snapshot",
    }
    meta_tables = {"ad_accounts", "campaigns", "adsets", "ads", "ad_insights_daily", "leads"}
    assert meta_tables | {"conversations", "messages"} <= {
        name for name, g in group.items() if g == groups.FACEBOOK
    }
    raw = {name for name, g in group.items() if g == groups.FACEBOOK_RAW}
    assert raw and all(name.startswith("fb_") and name.endswith("_raw") for name in raw)


def test_no_module_shares_its_name_with_an_asset():
    """`customers` the table and `customers.py` the module read alike in a traceback."""
    graph = defs.resolve_asset_graph()
    assets = {k.path[-1] for k in graph.get_all_asset_keys()}
    package = ROOT / "crm_pipeline"
    modules = {p.stem for p in package.rglob("*.py")} | {
        p.name for p in package.rglob("*") if p.is_dir()
    }
    assert not assets & modules
