"""Dagster instance configs: one convention, each one loaded by Dagster itself.

- The repo-root `dagster.yaml` and `deploy/k8s/dagster.yaml` (production: stock `storage:
  postgres` from `DAGSTER_PG_URL`), the instance the Helm values render, and the local instance a
  checkout generates from the repo-root file share their queue, pools, retention and logging.
- `DagsterInstance.from_config` loads each of them; the production ones store runs in a fresh
  database on the server under test (the machine's PostgreSQL 15 in CI's second pass), exactly
  as an operator sets `DAGSTER_PG_URL`.
- The local instance crm-pipeline writes under `CRM_DATA_DIR/dagster` is plain local storage.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy.engine import make_url

from crm_pipeline.config import ConfigError, load_settings
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.orchestrate import RETIRED_STORAGE_MODULE, instance_home, local_instance_config

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
PG_URL_STORAGE = {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
# The blocks every instance shares; capacity (runs at once, run start timeout) may differ.
SHARED = ("run_coordinator", "retention", "python_logs", "telemetry")


def _yaml(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text())


def _snake(values: dict) -> dict:
    return {"".join("_" + c.lower() if c.isupper() else c for c in k): v for k, v in values.items()}


def helm_instance(values: dict) -> dict:
    """The instance blocks Dagster's chart renders from our values (its `configmap-instance`
    template, for the keys we set); fails on a run coordinator type we do not render."""
    pg, daemon = values["postgresql"], values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["type"] == "CustomRunCoordinator", "the chart's queued type is internal"
    assert values["concurrency"]["enabled"], "the chart renders `concurrency` only when enabled"
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
        "scheme": pg["postgresqlScheme"],
    }
    storages = {
        f"{kind}_storage": {
            "module": f"dagster_postgres.{module}",
            "class": f"Postgres{name}Storage",
            "config": {"postgres_db": postgres_db},
        }
        for kind, module, name in (
            ("run", "run_storage", "Run"),
            ("event_log", "event_log", "EventLog"),
            ("schedule", "schedule_storage", "Schedule"),
        )
    }
    retention = values["retention"]
    return {
        **storages,
        "run_coordinator": coordinator["config"]["customRunCoordinator"],
        "concurrency": {
            "runs": _snake(values["concurrency"]["runs"]),
            "pools": _snake(values["concurrency"]["pools"]),
        },
        "run_monitoring": _snake(daemon["runMonitoring"]),
        "retention": {
            kind: {"purge_after_days": retention[kind]["purgeAfterDays"]}
            for kind in ("schedule", "sensor")
        },
        "python_logs": _snake(values["pythonLogs"]),
        "telemetry": values["telemetry"],
    }


def _instances() -> dict[str, dict]:
    return {
        "repo": _yaml("dagster.yaml"),
        "local": yaml.safe_load(local_instance_config()),
        "k8s": _yaml("deploy/k8s/dagster.yaml"),
        "helm": helm_instance(_yaml("deploy/helm/values.yaml")),
    }


def _modules(node) -> list[str]:
    """Every `module:` value in a config tree."""
    if isinstance(node, dict):
        own = [node["module"]] if isinstance(node.get("module"), str) else []
        return own + [m for value in node.values() for m in _modules(value)]
    if isinstance(node, list):
        return [m for value in node for m in _modules(value)]
    return []


def test_instance_files_share_one_convention():
    instances = _instances()
    repo = instances["repo"]
    for name, config in instances.items():
        for block in SHARED:
            assert config[block] == repo[block], f"{name}: {block}"
        assert config["concurrency"]["pools"] == repo["concurrency"]["pools"], name
        # Public module paths only: no `_private` segment in any `module:`.
        assert not [m for m in _modules(config) if any(p.startswith("_") for p in m.split("."))]
    assert repo["run_coordinator"]["module"] == "dagster"
    # Capacity: one host and its local twin agree, and so do the two Kubernetes forms.
    for a, b in (("repo", "local"), ("k8s", "helm")):
        for block in ("concurrency", "run_monitoring"):
            assert instances[a][block] == instances[b][block], f"{a}/{b}: {block}"
    # Storage: PostgreSQL in production, none in a checkout's local instance (nothing to set up).
    local = instances["local"]
    assert "storage" not in local and "run_storage" not in local
    assert repo["storage"] == instances["k8s"]["storage"] == PG_URL_STORAGE
    helm_db = instances["helm"]["run_storage"]["config"]["postgres_db"]
    assert helm_db["scheme"] == "postgresql+psycopg2"  # what DAGSTER_PG_URL must name


def _pg_url(database_url: str, password: str | None = None) -> str:
    """`database_url` as DAGSTER_PG_URL: the psycopg2 driver, optionally with a password."""
    url = make_url(database_url).set(drivername="postgresql+psycopg2")
    if password and not url.password:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


def _on_server(config: dict, database_url: str) -> dict:
    """`config` with the chart's database parts pointed at the server under test."""
    url = make_url(database_url)
    parts = {"hostname": url.host or "localhost", "port": url.port or 5432}
    # The embedded server listens on a socket only: libpq's `host` query parameter names it.
    parts |= {"db_name": url.database, "username": url.username, "params": dict(url.query)}
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        if key in config:
            config[key]["config"]["postgres_db"].update(parts)
    return config


def _home(tmp_path: Path, name: str, config: dict) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.fixture
def no_cluster(monkeypatch):
    """K8sRunLauncher builds its client from the in-cluster config: none here, nothing to load."""
    import kubernetes

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)


def test_dagster_loads_every_instance_file(fresh_database_url, tmp_path, monkeypatch, no_cluster):
    url = make_url(fresh_database_url)
    monkeypatch.setenv("DAGSTER_PG_URL", _pg_url(fresh_database_url))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    for name, config in _instances().items():
        home = _home(tmp_path, name, _on_server(config, fresh_database_url))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            production = name != "local"
            assert isinstance(instance.run_storage, PostgresRunStorage) == production, name
            assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator), name
            queue = instance.get_concurrency_config()
            assert (
                queue.run_queue_config.max_concurrent_runs
                == (config["concurrency"]["runs"]["max_concurrent_runs"])
            )
            assert queue.run_queue_config.max_user_code_failure_retries == 2
            assert queue.pool_config.default_pool_limit == 2
            assert instance.run_monitoring_enabled and not instance.telemetry_enabled
            if name in ("k8s", "helm"):
                assert isinstance(instance.run_launcher, K8sRunLauncher) == (name == "k8s")


@pytest.mark.parametrize(
    ("block", "typo"),
    [
        ("run_coordinator", {"config": {"dequeue_intervl_seconds": 1}}),
        ("run_launcher", {"config": {"job_namespce": "crm-pipeline"}}),
        ("retension", {}),
    ],
)
def test_a_typo_in_an_instance_file_is_caught(tmp_path, no_cluster, block, typo):
    """What the test above relies on: Dagster rejects a wrong key, it does not ignore it."""
    config = _yaml("deploy/k8s/dagster.yaml")
    del config["storage"]  # checks the queue and launcher without any database
    section = config.setdefault(block, {})
    section.setdefault("config", {}).update(typo.get("config", {}))
    home = str(_home(tmp_path, "typo", config))
    with pytest.raises(dg.DagsterInvalidConfigError), dg.DagsterInstance.from_config(home) as i:
        getattr(i, block)


def test_dagster_instance_info_shows_postgres_storage(fresh_database_url, tmp_path):
    password = "never-printed-4711"
    dagster_pg_url = _pg_url(fresh_database_url, password)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
        "DAGSTER_HOME": str(_home(tmp_path, "home", _yaml("dagster.yaml"))),
        "DAGSTER_PG_URL": dagster_pg_url,
    }
    done = subprocess.run(
        [DAGSTER, "instance", "info"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for storage in ("PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"):
        assert f": {storage}" in done.stdout, done.stdout
    # The URL (and so its password) is not printed back.
    secret = make_url(dagster_pg_url).password
    assert secret not in done.stdout + done.stderr


def test_materialisation_through_the_production_instance_lands_in_postgres(
    clean_db, database_url, fresh_database_url, tmp_path, monkeypatch
):
    home = _home(tmp_path, "home", _yaml("dagster.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", _pg_url(fresh_database_url))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
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


@pytest.mark.parametrize(
    "url", ["mysql://dagster:hunter2@db/dagster", "postgresql://dagster:hunter2@db/dagster"]
)
def test_a_bad_dagster_pg_url_is_a_clear_error_without_the_password(url):
    with pytest.raises(ConfigError) as info:
        load_settings({"DAGSTER_PG_URL": url})
    assert "DAGSTER_PG_URL" in str(info.value) and "hunter2" not in str(info.value)
    good = "postgresql+psycopg2://dagster:hunter2@db/dagster"
    assert load_settings({"DAGSTER_PG_URL": good}).dagster_pg_url == good


def _local_home(tmp_path: Path) -> tuple[Path, Path]:
    settings = load_settings({"CRM_DATA_DIR": str(tmp_path / "data")})
    home = instance_home(settings)
    return home, home / "dagster.yaml"


def test_the_local_instance_is_plain_local_storage(tmp_path):
    home, config = _local_home(tmp_path)
    assert home == (tmp_path / "data" / "dagster").resolve()
    written = yaml.safe_load(config.read_text())
    repo = {k: v for k, v in _yaml("dagster.yaml").items() if k != "storage"}
    assert written == repo, "the repo-root instance minus its PostgreSQL storage"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    # A file the user edited stays; one naming the storage class of earlier versions (which
    # cannot load any more) is rewritten.
    config.write_text("telemetry:\n  enabled: true\n")
    assert _local_home(tmp_path)[1].read_text() == "telemetry:\n  enabled: true\n"
    config.write_text(f"storage:\n  custom:\n    module: {RETIRED_STORAGE_MODULE}\n")
    assert yaml.safe_load(_local_home(tmp_path)[1].read_text()) == written


def test_a_throttle_wait_is_in_the_run_log_through_the_repo_instance(
    clean_db, database_url, tmp_path, monkeypatch
):
    """dagster.yaml hands our Python loggers to Dagster: the governor's wait is a run log line."""
    from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import insights_partition_key
    from crm_pipeline.defs.facebook.resources import GraphApiResource

    monkeypatch.setenv("CRM_GRAPH_BACKOFF_BASE_SECONDS", "0.01")
    home = _home(tmp_path, "home", yaml.safe_load(local_instance_config()))
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
