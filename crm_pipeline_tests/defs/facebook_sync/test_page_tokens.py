"""Page access tokens and several pages, through real Dagster runs against the emulator.

The emulator answers a Page's conversations only to a Page access token (code 210 otherwise),
as Meta does; the sync gets that token from the configured one, once per page and session.
"""

import logging

import dagster as dg
import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from graph_emulator.page_tokens import page_token
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.defs.crm.assets import conversations_and_messages, leads
from crm_pipeline.defs.facebook.assets import fb_conversations_raw, fb_leads_raw
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook.page_tokens import PAGE_PERMISSIONS
from crm_pipeline.local_emulator import emulator_process
from crm_pipeline.logs import redact
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import ACCOUNTS, resources_for
from crm_pipeline_tests.emulator_snapshots import all_leads, conversations_with_messages

PAGE = "2001"
UNKNOWN_PAGE = "9999"
USER_TOKEN = "EAAuser-token-of-the-page-tests-0123"
PAGE_STREAMS = [fb_conversations_raw, conversations_and_messages, fb_leads_raw, leads]


@pytest.fixture(autouse=True)
def user_token(monkeypatch):
    """The configured token (`FB_ACCESS_TOKEN`) the emulators of these tests expect."""
    monkeypatch.setenv("FB_ACCESS_TOKEN", USER_TOKEN)


def _resources(database_url, url, dirs, **graph) -> dict:
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(graph_url=url, ad_account_ids=",".join(ACCOUNTS), **graph),
    }


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def _token_requests(server: GraphEmulator) -> list[str]:
    return [
        r.path.strip("/").split("/")[-1]
        for r in server.requests
        if r.params.get("fields") == "access_token"
    ]


def _texts(result: dg.ExecuteInProcessResult) -> str:
    """Everything the run recorded: events, messages, metadata, failures."""
    return "\n".join(repr(event) for event in result.all_events)


def test_page_streams_read_with_the_page_token(clean_db, database_url, dirs, caplog):
    data = EmulatorData()
    caplog.set_level(logging.DEBUG)
    with GraphEmulator(data, expected_token=USER_TOKEN) as server:
        resources = _resources(database_url, server.url, dirs, page_id=PAGE)
        result = dg.materialize(
            [fb_conversations_raw, conversations_and_messages], resources=resources
        )
        assert result.success
        assert _token_requests(server) == [PAGE]  # one per page and session
        result_leads = dg.materialize([fb_leads_raw, leads], resources=resources)
    assert result_leads.success
    assert _count(clean_db, "conversations") == len(conversations_with_messages(data))
    assert _count(clean_db, "leads") == len(all_leads(data))
    # Dagster's events as stored; the log lines as our commands' formatters write them (even
    # urllib3's DEBUG lines, which quote request URLs, query string and all).
    recorded = _texts(result) + _texts(result_leads) + redact(caplog.text)
    for secret in (USER_TOKEN, page_token(USER_TOKEN, PAGE)):
        assert secret not in recorded


def test_page_streams_sync_every_configured_page_once(clean_db, database_url, dirs):
    # FB_PAGE_ID and FB_PAGE_IDS naming the same page: it is read once.
    with GraphEmulator(EmulatorData()) as server:
        resources = _resources(database_url, server.url, dirs, page_id=PAGE, page_ids=f"{PAGE}")
        result = dg.materialize([fb_conversations_raw], resources=resources)
        assert result.success
        assert _token_requests(server) == [PAGE]
    [event] = [
        m
        for m in result.asset_materializations_for_node("fb_conversations_raw")
        if m.asset_key == dg.AssetKey("fb_conversations_raw")
    ]
    assert event.metadata["facebook_pages"].value == 1


@pytest.mark.parametrize("assets", [[fb_conversations_raw], [fb_leads_raw]], ids=["conv", "leads"])
def test_a_page_the_token_cannot_act_as_fails_before_anything_is_written(
    clean_db, database_url, dirs, assets
):
    with GraphEmulator(EmulatorData(), expected_token=USER_TOKEN) as server:
        resources = _resources(
            database_url, server.url, dirs, page_id=PAGE, page_ids=f"{UNKNOWN_PAGE}"
        )
        result = dg.materialize(assets, resources=resources, raise_on_error=False)
        edges = ("/conversations", "/leadgen_forms", "/leads")
        reads = [r.path for r in server.requests if r.path.endswith(edges)]
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"Page {UNKNOWN_PAGE}" in message
    assert all(permission in message for permission in PAGE_PERMISSIONS)
    assert USER_TOKEN not in _texts(result)
    assert reads == []  # the good page was not read either: nothing landed, nothing advanced
    for stream in ("conversations", "messages", "leads"):
        assert lake.newest_sync(dirs["data"], stream) is None
    assert _count(clean_db, "sync_state") == 0


def test_a_token_without_page_permissions_fails_naming_them(clean_db, database_url, dirs):
    faults = FaultPlan()
    faults.add(Fault(kind="permission", path=f"/{PAGE}"))  # the Page token request
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        resources = resources_for(database_url, server.url, dirs)
        result = dg.materialize([fb_conversations_raw], resources=resources, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"No Page access token for Page {PAGE}" in message
    assert "pages_messaging" in message and "leads_retrieval" in message


def test_a_separately_running_emulator_over_http(clean_db, database_url, dirs, monkeypatch):
    """`FB_GRAPH_URL` at an emulator process, as at Meta: settings, token and all."""
    with emulator_process() as url:
        monkeypatch.setenv("FB_GRAPH_URL", url)
        monkeypatch.setenv("FB_AD_ACCOUNT_IDS", ",".join(ACCOUNTS))
        monkeypatch.setenv("FB_PAGE_IDS", PAGE)
        resources = {
            "postgres": PostgresResource(database_url=database_url),
            "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
            "graph_api": GraphApiResource(),
        }
        result = dg.materialize(PAGE_STREAMS, resources=resources)
    assert result.success
    data = EmulatorData()
    assert _count(clean_db, "conversations") == len(conversations_with_messages(data))
    assert _count(clean_db, "leads") == len(all_leads(data))
    assert USER_TOKEN not in _texts(result)
