"""The repo-root `dagster.yaml` is the production instance: booted on PostgreSQL, it runs.

`DAGSTER_PG_URL` points at a fresh database on the server under test (the machine's
PostgreSQL 15 in CI's second pass), exactly as an operator would set it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from crm_pipeline.db.engine import libpq_url
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.resources import PostgresResource, StorageResource

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def test_dagster_instance_info_shows_postgres_storage(fresh_database_url, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
        "DAGSTER_HOME": str(_home(tmp_path)),
        "DAGSTER_PG_URL": libpq_url(fresh_database_url),
    }
    done = subprocess.run(
        [DAGSTER, "instance", "info"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for storage in ("PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"):
        assert f": {storage}" in done.stdout, done.stdout
    # The URL's password, if any, must not be printed back.
    assert "DAGSTER_PG_URL" not in done.stdout


def test_materialisation_through_the_repo_instance_lands_in_postgres(
    clean_db, database_url, fresh_database_url, tmp_path, monkeypatch
):
    home = _home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", libpq_url(fresh_database_url))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # The queue and its limits, as configured in the file.
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config()
        assert (
            queue.run_queue_config.max_concurrent_runs
            == config["concurrency"]["runs"]["max_concurrent_runs"]
        )
        assert (
            queue.pool_config.default_pool_limit == config["concurrency"]["pools"]["default_limit"]
        )
        assert instance.run_monitoring_enabled
        sensor_retention = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor_retention[TickStatus.SKIPPED] == 1
        assert not instance.telemetry_enabled

        result = dg.materialize(
            [analytics_summary],
            instance=instance,
            resources={
                "postgres": PostgresResource(database_url=database_url),
                "storage": StorageResource(
                    data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")
                ),
            },
        )
        assert result.success
    assert (tmp_path / "cache" / "analytics" / "summary.json").exists()
    with psycopg.connect(libpq_url(fresh_database_url)) as conn:
        status = conn.execute(
            "SELECT status FROM runs WHERE run_id = %s", (result.run_id,)
        ).fetchone()
        materialised = conn.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s"
            " AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        ).fetchone()[0]
    assert status == ("SUCCESS",)
    assert materialised == 1


def test_a_bad_dagster_pg_url_is_a_clear_error_without_the_password(monkeypatch):
    from crm_pipeline.config import ConfigError
    from crm_pipeline.dagster_storage import PostgresOrLocalStorage

    monkeypatch.setenv("DAGSTER_PG_URL", "mysql://dagster:hunter2@db/dagster")
    try:
        PostgresOrLocalStorage.from_config_value(None, {"postgres_url_env": "DAGSTER_PG_URL"})
    except ConfigError as exc:
        assert "DAGSTER_PG_URL" in str(exc) and "hunter2" not in str(exc)
    else:
        raise AssertionError("a MySQL URL was accepted as the instance storage")


def test_a_throttle_wait_is_in_the_run_log_through_the_repo_instance(
    clean_db, database_url, tmp_path, monkeypatch
):
    """dagster.yaml hands our Python loggers to Dagster: the governor's wait is a run log line."""
    from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import insights_partition_key
    from crm_pipeline.defs.facebook.resources import GraphApiResource

    monkeypatch.setenv("CRM_GRAPH_BACKOFF_BASE_SECONDS", "0.01")
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    home = _home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    faults = FaultPlan()
    faults.add(Fault(kind="throttle", code=17, subcode=2446079, count=1, path="/insights"))
    with (
        GraphEmulator(EmulatorData(), faults=faults) as server,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        result = dg.materialize(
            [fb_ad_insights_raw],
            partition_key=insights_partition_key("act_1001", "2026-11-18"),
            instance=instance,
            resources={
                "graph_api": GraphApiResource(graph_url=server.url, ad_account_ids="act_1001"),
                "storage": StorageResource(
                    data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")
                ),
            },
        )
        assert result.success
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
    waits = [m for m in messages if "graph api" in m and "waiting" in m]
    assert waits and "throttle code 17" in waits[0], messages[-20:]
