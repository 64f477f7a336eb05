from pathlib import Path

import pytest

from crm_pipeline.config import ConfigError, Secret, load_settings, redact_url

TOKEN = "EAAGsecretTOKENvalue123"


def test_defaults_use_embedded_database_and_emulator():
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.cache_dir == Path("cache")
    assert settings.data_dir == Path(".crm")
    assert settings.pg_data_dir == Path(".crm/pg")
    assert settings.uses_emulator
    assert settings.effective_graph_url is None


def test_token_without_url_means_the_real_graph_api():
    settings = load_settings({"FB_ACCESS_TOKEN": TOKEN, "FB_AD_ACCOUNT_IDS": "act_1"})
    assert not settings.uses_emulator
    assert settings.effective_graph_url == "https://graph.facebook.com"


def test_values_are_parsed_and_normalised():
    settings = load_settings(
        {
            "CRM_DATABASE_URL": "postgresql://u:pw@127.0.0.1:5432/crm",
            "FB_GRAPH_URL": "http://127.0.0.1:8080/",
            "FB_API_VERSION": "v26.0",
            "FB_AD_ACCOUNT_IDS": " act_12, 34 ,act_12,",
            "FB_PAGE_ID": "55",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u:pw@127.0.0.1:5432/crm"
    assert settings.graph_url == "http://127.0.0.1:8080"
    assert settings.ad_account_ids == ("act_12", "act_34")
    assert settings.page_id == "55"


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
    ],
)
def test_invalid_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env)


def test_errors_never_echo_secrets():
    with pytest.raises(ConfigError) as info:
        load_settings({"CRM_DATABASE_URL": f"mysql://u:{TOKEN}@h/db"})
    assert TOKEN not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings({"FB_ACCESS_TOKEN": f"{TOKEN} trailing"})
    assert TOKEN not in str(info.value)


def test_secrets_do_not_print_themselves():
    settings = load_settings({"FB_ACCESS_TOKEN": TOKEN, "FB_APP_SECRET": "appsecret42"})
    for text in (repr(settings), str(settings), f"{settings.access_token}"):
        assert TOKEN not in text and "appsecret42" not in text
    assert settings.access_token.reveal() == TOKEN
    assert Secret("a") == Secret("a")


def test_redact_url_masks_password():
    assert "pw" not in redact_url("postgresql+psycopg://u:pw@h/db")
