"""The settings model: one reader of the environment, explicit emulator, production rules."""

import re
from pathlib import Path

import pytest

from crm_pipeline.config import (
    DEFAULT_MASK_KEY,
    DEV_APP_SECRET,
    DEV_VERIFY_TOKEN,
    ConfigError,
    Secret,
    configuration_table,
    environment_variables,
    load_settings,
    redact_url,
)

TOKEN = "EAAGsecretTOKENvalue123"
ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "CRM_ENV": "production",
    "CRM_DATABASE_URL": "postgresql://crm:pw@db.internal:5432/crm",
    "FB_ACCESS_TOKEN": TOKEN,
    "FB_APP_SECRET": "a-real-app-secret",
    "FB_WEBHOOK_VERIFY_TOKEN": "a-real-verify-token",
    "FB_AD_ACCOUNT_IDS": "act_1",
    "FB_PAGE_ID": "42",
    "CRM_MASK_KEY": "a-real-mask-key",
}


def test_defaults_use_the_embedded_database_and_never_the_emulator_silently():
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.cache_dir == Path("cache")
    assert settings.data_dir == Path(".crm")
    assert settings.pg_data_dir == Path(".crm/pg")
    assert settings.env == "development"
    assert (settings.retention.raw_days, settings.retention.inbox_days) == (30, 30)
    assert not settings.uses_emulator
    assert settings.effective_graph_url == "https://graph.facebook.com"
    assert settings.missing_graph_credentials() == ["FB_ACCESS_TOKEN", "FB_AD_ACCOUNT_IDS"]
    with pytest.raises(ConfigError, match="FB_ACCESS_TOKEN and FB_AD_ACCOUNT_IDS not set"):
        settings.require_graph_credentials()


def test_the_emulator_only_when_asked_for():
    asked = load_settings({"FB_GRAPH_URL": "emulator"})
    assert asked.uses_emulator and asked.effective_graph_url is None  # the caller starts one
    assert asked.missing_graph_credentials() == []
    running = load_settings({"FB_GRAPH_URL": "Emulator", "CRM_EMULATOR_URL": "http://127.0.0.1:9/"})
    assert running.effective_graph_url == "http://127.0.0.1:9"
    real = load_settings({"FB_ACCESS_TOKEN": TOKEN, "FB_AD_ACCOUNT_IDS": "act_1"})
    assert not real.uses_emulator and real.missing_graph_credentials() == []


def test_values_are_parsed_and_normalised():
    settings = load_settings(
        {
            "CRM_DATABASE_URL": "postgresql://u:pw@127.0.0.1:5432/crm",
            "FB_GRAPH_URL": "http://127.0.0.1:8080/",
            "FB_API_VERSION": "v26.0",
            "FB_AD_ACCOUNT_IDS": " act_12, 34 ,act_12,",
            "FB_PAGE_ID": "55",
            "CRM_GRAPH_MAX_RETRIES": "3",
            "CRM_CHANGE_SENSOR_INTERVAL": " 2 ",
            "CRM_API_ALLOWED_HOSTS": "CRM.example.com, *.corp.example",
            "CRM_LOG_FORMAT": "JSON",
            "CRM_INSIGHTS_MODE": "",  # blank means unset
            "CRM_RAW_RETENTION_DAYS": " 7 ",
            "CRM_INBOX_RETENTION_DAYS": "1",
        }
    )
    assert (settings.retention.raw_days, settings.retention.inbox_days) == (7, 1)
    assert settings.database_url == "postgresql+psycopg://u:pw@127.0.0.1:5432/crm"
    assert settings.graph_url == "http://127.0.0.1:8080"
    assert settings.ad_account_ids == ("act_12", "act_34")
    assert settings.page_id == "55"
    assert settings.graph.max_retries == 3
    assert settings.graph.insights_mode == "sync"
    assert settings.sensors.change_interval_seconds == 2
    assert settings.api.allowed_hosts == ("crm.example.com", "*.corp.example")
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CRM_DATABASE_URL": "mysql://u:pw@h/db"}, "must point at PostgreSQL"),
        ({"CRM_DATABASE_URL": "not a url"}, "not a valid database URL"),
        ({"CRM_DATABASE_URL": "postgresql://u:pw@h"}, "must name a database"),
        ({"FB_GRAPH_URL": "ftp://x"}, "FB_GRAPH_URL must be an http(s) URL"),
        ({"FB_API_VERSION": "26"}, "FB_API_VERSION must look like v26.0"),
        ({"FB_AD_ACCOUNT_IDS": "act_1,acct_2"}, "FB_AD_ACCOUNT_IDS"),
        ({"FB_PAGE_ID": "my-page"}, "FB_PAGE_ID"),
        ({"CRM_ENV": "prod"}, "CRM_ENV"),
        ({"CRM_GRAPH_MAX_RETRIES": "many"}, "CRM_GRAPH_MAX_RETRIES"),
        ({"CRM_API_LIMIT_CONCURRENCY": "0"}, "CRM_API_LIMIT_CONCURRENCY"),
        ({"CRM_INSIGHTS_MODE": "fast"}, "CRM_INSIGHTS_MODE"),
        ({"CRM_API_ALLOWED_HOSTS": "https://crm.example.com/"}, "not URLs"),
        ({"CRM_GRAPH_MAX_WAIT_SECONDS": "inf"}, "CRM_GRAPH_MAX_WAIT_SECONDS"),
        ({"CRM_RAW_RETENTION_DAYS": "0"}, "CRM_RAW_RETENTION_DAYS must be a whole number of days"),
        ({"CRM_RAW_RETENTION_DAYS": "-5"}, "from 1 to 36500 (how long data is kept"),
        ({"CRM_INBOX_RETENTION_DAYS": "0"}, "CRM_INBOX_RETENTION_DAYS must be a whole number"),
        ({"CRM_INBOX_RETENTION_DAYS": "-1"}, "CRM_INBOX_RETENTION_DAYS must be a whole number"),
        ({"CRM_INBOX_RETENTION_DAYS": "a month"}, "CRM_INBOX_RETENTION_DAYS: Input should be"),
        ({"CRM_RAW_RETENTION_DAYS": "36501"}, "CRM_RAW_RETENTION_DAYS must be a whole number"),
    ],
)
def test_invalid_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(env)


def test_errors_never_echo_secrets():
    with pytest.raises(ConfigError) as info:
        load_settings({"CRM_DATABASE_URL": f"mysql://u:{TOKEN}@h/db"})
    assert TOKEN not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings({"FB_ACCESS_TOKEN": f"{TOKEN} trailing"})
    assert TOKEN not in str(info.value)
    with pytest.raises(ConfigError) as info:  # a pydantic type error next to a secret
        load_settings({"FB_APP_SECRET": TOKEN, "CRM_API_MAX_BODY_BYTES": TOKEN})
    assert TOKEN not in str(info.value) and "CRM_API_MAX_BODY_BYTES" in str(info.value)


def test_secrets_do_not_print_themselves():
    settings = load_settings({"FB_ACCESS_TOKEN": TOKEN, "FB_APP_SECRET": "appsecret42"})
    for text in (repr(settings), str(settings), f"{settings.access_token}"):
        assert TOKEN not in text and "appsecret42" not in text
    assert settings.access_token.reveal() == TOKEN
    assert Secret("a") == Secret("a")
    described = dict(load_settings(PRODUCTION).describe())
    assert described["FB_ACCESS_TOKEN"] == "*** (set)"
    assert "pw" not in described["CRM_DATABASE_URL"]
    assert TOKEN not in str(described)


def test_production_lists_every_problem_at_once():
    problems = load_settings({"CRM_ENV": "production"}).production_problems()
    [missing] = problems
    for variable in (
        "CRM_DATABASE_URL",
        "FB_ACCESS_TOKEN",
        "FB_APP_SECRET",
        "FB_WEBHOOK_VERIFY_TOKEN",
        "FB_AD_ACCOUNT_IDS",
        "FB_PAGE_ID",
        "CRM_MASK_KEY",
    ):
        assert variable in missing
    assert load_settings(PRODUCTION).production_problems() == []
    load_settings(PRODUCTION).require_production_ready("serve")

    dev_defaults = {
        **PRODUCTION,
        "FB_APP_SECRET": DEV_APP_SECRET,
        "FB_WEBHOOK_VERIFY_TOKEN": DEV_VERIFY_TOKEN,
        "CRM_MASK_KEY": DEFAULT_MASK_KEY,
        "FB_GRAPH_URL": "emulator",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(dev_defaults).require_production_ready("serve")
    message = str(info.value)
    for part in ("FB_APP_SECRET", "FB_WEBHOOK_VERIFY_TOKEN", "CRM_MASK_KEY", "emulator"):
        assert part in message
    assert DEV_APP_SECRET not in message and DEFAULT_MASK_KEY not in message
    load_settings({}).require_production_ready("serve")  # development: nothing to refuse


def test_redact_url_masks_password():
    assert "pw" not in redact_url("postgresql+psycopg://u:pw@h/db")


def test_the_model_is_the_only_reader_of_the_environment():
    # The Graph API emulator reads its own two variables; it is a separate program that
    # leaves this package (issue 15), and no production code path starts it.
    exempt = {ROOT / "crm_pipeline" / "config.py"}
    # Reads only: `os.environ[...] = value` hands a setting to Dagster or a child process.
    reads = re.compile(r"os\.getenv\(|environ\.get\(|os\.environ\[[^\]]+\](?!\s*=[^=])")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in (ROOT / "crm_pipeline").rglob("*.py")
        if path not in exempt and "emulator" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line)
    ]
    assert offenders == []


def test_readme_configuration_table_is_generated_from_the_model():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- configuration-table:start -->", "<!-- configuration-table:end -->"
    table = readme.split(start)[1].split(end)[0].strip()
    assert table == configuration_table(), "run `python -m crm_pipeline.config` into README.md"


def test_every_variable_of_the_model_is_documented_and_cleared_for_tests():
    variables = environment_variables()
    assert len(variables) == len(set(variables)) >= 35
    for variable in variables:
        assert f"`{variable}`" in configuration_table()


def test_the_cache_location_is_a_folder_or_an_s3_prefix():
    assert load_settings({}).cache_location == "cache"  # CRM_CACHE_DIR, as before
    assert load_settings({"CRM_CACHE_DIR": "/srv/cache"}).cache_location == "/srv/cache"
    s3 = load_settings(
        {
            "CRM_CACHE_URL": "s3://crm-cache/prod/",
            "CRM_CACHE_S3_ENDPOINT_URL": "https://minio.internal:9000/",
        }
    )
    assert s3.cache_location == "s3://crm-cache/prod"
    assert s3.cache.s3_endpoint_url == "https://minio.internal:9000"
    assert load_settings({"CRM_CACHE_URL": "/mnt/cache"}).cache_location == "/mnt/cache"
    refused = {
        "CRM_CACHE_URL": ["gs://crm-cache/p", "s3://Bad_Bucket/p", "s3://key:pw-secret@crm/p"],
        "CRM_CACHE_S3_ENDPOINT_URL": ["minio:9000", "http://key:pw-secret@minio:9000"],
    }
    for variable, values in refused.items():
        for value in values:
            with pytest.raises(ConfigError, match=variable) as info:
                load_settings({variable: value})
            assert "pw-secret" not in str(info.value)
