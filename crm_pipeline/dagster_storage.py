"""Dagster instance storage chosen by environment, for the repo-root `dagster.yaml`.

With `DAGSTER_PG_URL` set, runs, events, schedules and sensor ticks go to that PostgreSQL
(dagster-postgres), as in production. Without it, `dagster dev` or `dagster definitions validate`
run from a fresh clone still work: they fall back to Dagster's own local storage in a folder
under `CRM_DATA_DIR`, instead of failing on a missing variable.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from crm_pipeline.config import ConfigError, load_settings, normalize_database_url


class PostgresOrLocalStorage(DagsterStorage, ConfigurableClass):
    """Never instantiated: `from_config_value` returns the real storage to use."""

    @classmethod
    def config_type(cls) -> dict:
        return {
            "postgres_url_env": Field(str, default_value="DAGSTER_PG_URL", is_required=False),
            "local_base_dir": Field(StringSource, is_required=False),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        variable = config_value.get("postgres_url_env", "DAGSTER_PG_URL")
        if variable != "DAGSTER_PG_URL":  # the settings model is the one reader of variables
            raise ConfigError("postgres_url_env must be DAGSTER_PG_URL (the one variable read)")
        settings = load_settings()
        if settings.dagster_pg_url:
            from dagster_postgres import DagsterPostgresStorage

            url = normalize_database_url(settings.dagster_pg_url, variable, driver="psycopg2")
            return DagsterPostgresStorage(postgres_url=url, inst_data=inst_data)
        base = config_value.get("local_base_dir") or str(settings.data_dir / "dagster")
        base_dir = Path(base).expanduser().resolve()
        base_dir.mkdir(parents=True, exist_ok=True)
        return DagsterSqliteStorage.from_local(base_dir=str(base_dir), inst_data=inst_data)
