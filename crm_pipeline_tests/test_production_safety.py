"""Production-safe by construction: no silent emulator, no fake data in a real database, and
`CRM_ENV=production` refusing to start on demo defaults, as an operator meets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.config import ConfigError
from crm_pipeline.db.schema import metadata
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.facebook.assets import fb_leads_raw
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
REQUIRED = (
    "CRM_DATABASE_URL",
    "FB_ACCESS_TOKEN",
    "FB_APP_SECRET",
    "FB_WEBHOOK_VERIFY_TOKEN",
    "FB_AD_ACCOUNT_IDS",
    "FB_PAGE_ID",
    "CRM_MASK_KEY",
)


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    return {**base, **extra}


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _row_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar_one()
            for t in metadata.sorted_tables
        }


def test_sync_without_a_token_names_it_and_writes_nothing(clean_db, database_url, tmp_path):
    env = _env(
        CRM_DATABASE_URL=database_url,
        CRM_DATA_DIR=str(tmp_path / "data"),
        CRM_CACHE_DIR=str(tmp_path / "cache"),
    )
    result = _cli(
        env, "sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-01", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "FB_ACCESS_TOKEN" in result.stderr and "FB_GRAPH_URL=emulator" in result.stderr
    assert set(_row_counts(clean_db).values()) == {0}
    assert not (tmp_path / "data" / "raw").exists()


def test_a_run_without_credentials_fails_at_once_naming_them(clean_db, database_url, dirs):
    result = dg.materialize(
        [fb_leads_raw],
        resources={
            "graph_api": GraphApiResource(),  # from the environment: nothing configured
            "postgres": PostgresResource(database_url=database_url),
            "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        },
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.event_specific_data.error.to_string())
    assert "FB_ACCESS_TOKEN" in message and "FB_AD_ACCOUNT_IDS" in message
    assert not any(dirs["data"].rglob("*.parquet"))


def test_emulator_data_never_reaches_a_database_holding_real_data(
    clean_db, database_url, monkeypatch
):
    from crm_pipeline.defs import resources

    # Forget what earlier tests of this process learned about the session database.
    monkeypatch.setattr(resources, "_demo_checked", set())
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (name) VALUES ('A real customer')"))
    monkeypatch.setenv("FB_GRAPH_URL", "emulator")
    with pytest.raises(ConfigError, match="not created for a demo"):
        PostgresResource(database_url=database_url).engine()


def test_an_empty_database_can_be_claimed_for_demo_data(clean_db, database_url, monkeypatch):
    from crm_pipeline.defs import resources

    monkeypatch.setenv("FB_GRAPH_URL", "emulator")
    monkeypatch.setattr(resources, "_demo_checked", set())
    PostgresResource(database_url=database_url).engine()  # empty: claimed for the demo
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (name) VALUES ('Demo person')"))
    monkeypatch.setattr(resources, "_demo_checked", set())
    PostgresResource(database_url=database_url).engine()  # a demo database stays one


def test_production_entry_points_refuse_listing_every_missing_variable(tmp_path):
    env = _env(CRM_ENV="production")
    for args in (
        ("serve",),
        ("config", "check"),
        ("db", "upgrade"),
        ("sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-01"),
        ("clone-db", "--to", str(tmp_path / "clone")),
        ("demo",),
        ("dev",),
    ):
        result = _cli(env, *args, cwd=tmp_path)
        assert result.returncode != 0, args
        if args[0] in ("demo", "dev"):
            assert "production" in result.stderr, args
            continue
        for variable in REQUIRED:
            assert variable in result.stderr, (args, variable, result.stderr)
    assert not (tmp_path / ".crm").exists()  # no embedded database was started


def test_config_check_masks_secrets_and_passes_a_complete_production_setup(tmp_path):
    secrets = {
        "FB_ACCESS_TOKEN": "EAAB-production-token-1",
        "FB_APP_SECRET": "production-app-secret-2",
        "FB_WEBHOOK_VERIFY_TOKEN": "production-verify-3",
        "CRM_MASK_KEY": "production-mask-key-4",
    }
    env = _env(
        CRM_ENV="production",
        CRM_DATABASE_URL="postgresql://crm:db-password-5@127.0.0.1:1/crm",
        FB_AD_ACCOUNT_IDS="act_1",
        FB_PAGE_ID="42",
        **secrets,
    )
    result = _cli(env, "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for value in (*secrets.values(), "db-password-5"):
        assert value not in result.stdout + result.stderr
    assert "FB_ACCESS_TOKEN" in result.stdout and "configuration ok" in result.stdout

    dev_secret = _cli(
        {**env, "FB_APP_SECRET": "crm-dev-app-secret"}, "config", "check", cwd=tmp_path
    )
    assert dev_secret.returncode == 1
    assert "FB_APP_SECRET is the public development default" in dev_secret.stderr
    assert "crm-dev-app-secret" not in dev_secret.stdout + dev_secret.stderr


def test_sensors_refuse_to_tick_in_production_on_demo_defaults(database_url, monkeypatch):
    monkeypatch.setenv("CRM_ENV", "production")
    with (
        dg.build_sensor_context(
            resources={"postgres": PostgresResource(database_url=database_url)}
        ) as context,
        pytest.raises(ConfigError, match="FB_ACCESS_TOKEN"),
    ):
        change_log_sensor(context)
