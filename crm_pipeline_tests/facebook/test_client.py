"""GraphClient tests: the real facebook-business SDK talking real HTTP to the emulator."""

from __future__ import annotations

import json
import math
import socket
import warnings
from datetime import date, timedelta
from urllib.parse import quote

import pytest
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from graph_emulator import EmulatorData

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.fields import AD_ACCOUNT_FIELDS, INSIGHT_FIELDS, insight_params
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_settings import GovernorSettings

SINCE, UNTIL = date(2026, 2, 2), date(2026, 2, 8)  # 7 days


@pytest.fixture
def client(emulator, token, app_secret) -> GraphClient:
    return GraphClient(emulator.url, token, app_secret=app_secret, app_id="123", timeout=10)


def test_insights_page_through_the_sdk(emulator, client):
    limit = 10
    rows, per_account = [], {}
    for account in ("act_1001", "act_1002"):
        before = client.calls
        account_rows = list(client.iter_insights(account, SINCE, UNTIL, limit=limit))
        per_account[account] = (len(account_rows), client.calls - before)
        rows += account_rows

    # 12 ads x 7 days per account; the SDK stops on the page without `next`, never fetching
    # an extra empty page.
    assert per_account == {
        "act_1001": (84, math.ceil(84 / limit)),
        "act_1002": (84, math.ceil(84 / limit)),
    }
    assert len(rows) == 168
    assert len({(r["account_id"], r["ad_id"], r["date_start"]) for r in rows}) == 168
    assert client.calls == len(emulator.requests) == 18
    # Every page after the first was requested with the previous page's cursor.
    afters = [r.params.get("after") for r in emulator.requests]
    assert afters.count(None) == 2


def test_exact_multiple_of_limit_costs_no_extra_call(client):
    rows = list(client.iter_insights("act_1001", SINCE, UNTIL, limit=12))
    assert len(rows) == 84
    assert client.calls == 7


def test_rows_match_emulator_data_with_string_numbers(client):
    rows = list(client.iter_insights("1002", SINCE, UNTIL))  # bare digits are accepted too
    expected = EmulatorData(seed=7).insights("act_1002", SINCE, UNTIL)
    assert rows == expected
    assert set(rows[0]) == set(INSIGHT_FIELDS)
    assert all(isinstance(rows[0][k], str) for k in ("impressions", "clicks", "spend", "reach"))


def test_time_range_is_respected(client):
    since, until = date(2025, 12, 30), date(2026, 1, 2)
    rows = list(client.iter_insights("act_1001", since, until, limit=7))
    days = {r["date_start"] for r in rows}
    assert days == {(since + timedelta(days=i)).isoformat() for i in range(4)}
    assert all(r["date_start"] == r["date_stop"] for r in rows)
    assert len(rows) == 4 * 12


def test_insight_rows_are_the_sdk_cursors_rows_without_its_objects(emulator, client):
    """Insights are paged as plain JSON (no SDK object per row): same rows, same requests."""
    since, until = date(2026, 2, 2), date(2026, 2, 3)
    ours = list(client.iter_insights("act_1001", since, until, limit=7))
    ours_requests = [(r.path, r.params) for r in emulator.requests]
    emulator.reset_requests()
    params = insight_params(since, until, limit=7)
    account = client.account("act_1001")
    sdk = list(client.iterate(lambda: account.get_insights(fields=INSIGHT_FIELDS, params=params)))
    assert ours == sdk and len(ours) == 2 * 12  # 24 rows on 4 pages of 7
    assert ours_requests == [(r.path, r.params) for r in emulator.requests]
    assert len(ours_requests) == 4 and all("after" in p for _, p in ours_requests[1:])


def test_sdk_wire_format_for_insights(emulator, client):
    list(client.iter_insights("act_1001", SINCE, UNTIL, fields=("ad_id", "spend"), limit=500))
    (request,) = emulator.requests
    assert request.path == "/v26.0/act_1001/insights"
    # What the SDK actually sends: fields comma-joined, time_range as compact JSON.
    assert request.params["fields"] == "ad_id,spend"
    assert request.params["time_range"] == '{"since":"2026-02-02","until":"2026-02-08"}'
    assert (request.params["level"], request.params["time_increment"]) == ("ad", "1")
    assert "access_token" not in request.params  # stripped by the emulator's log


@pytest.mark.parametrize("version", ["v25.0", "v27.0"])  # a deprecated one still served, the newest
def test_api_version_is_used_in_the_path(emulator, token, version):
    client = GraphClient(emulator.url + "/", token, api_version=version)
    assert len(list(client.iter_campaigns("act_1001"))) == 2
    assert [r.path for r in emulator.requests] == [f"/{version}/act_1001/campaigns"]


def test_ad_account_node_is_read_with_every_field(emulator, client):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK knows every field we ask for
        account = client.read_ad_account("1002")  # bare digits are accepted too
    assert account == EmulatorData(seed=7).ad_account("act_1002")
    assert set(account) == set(AD_ACCOUNT_FIELDS)
    (request,) = emulator.requests
    assert (request.method, request.path.rstrip("/")) == ("GET", "/v26.0/act_1002")
    assert request.params["fields"] == ",".join(AD_ACCOUNT_FIELDS)
    assert client.governor.stats.calls == client.calls == 1  # through the governed call path


def test_malformed_api_version_is_refused_early(emulator, token):
    with pytest.raises(ValueError):
        GraphClient(emulator.url, token, api_version="19.0")


def test_object_edges_and_parent_ids(client):
    for account in ("act_1001", "act_1002"):
        campaigns = list(client.iter_campaigns(account))
        adsets = list(client.iter_adsets(account))
        ads = list(client.iter_ads(account))
        assert (len(campaigns), len(adsets), len(ads)) == (2, 4, 12)

        digits = account.removeprefix("act_")
        assert {o["account_id"] for o in campaigns + adsets + ads} == {digits}
        campaign_ids = {c["id"] for c in campaigns}
        adset_campaign = {s["id"]: s["campaign_id"] for s in adsets}
        assert set(adset_campaign.values()) == campaign_ids
        for ad in ads:
            assert adset_campaign[ad["adset_id"]] == ad["campaign_id"]
        assert all(c["objective"] for c in campaigns)


def test_object_edges_page_with_small_limits(client):
    ads = list(client.iter_ads("act_1001", limit=5))
    assert len({a["id"] for a in ads}) == 12
    assert client.calls == 3


def test_invalid_token_raises_redacted_error(emulator, app_secret):
    bad_token = "EAAbad-token-that-must-not-leak-42"
    client = GraphClient(emulator.url, bad_token, app_secret=app_secret)
    with pytest.raises(GraphApiError) as info:
        list(client.iter_insights("act_1001", SINCE, UNTIL))
    error = info.value
    assert (error.code, error.http_status, error.is_transient) == (190, 400, False)
    assert error.error_type == "OAuthException"
    text = f"{error} {error!r} {error.args}"
    assert bad_token not in text
    assert app_secret not in text
    assert "Invalid OAuth access token" in str(error)
    assert "access token" in str(error) and "FB_ACCESS_TOKEN" in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_unknown_account_raises_code_100(client):
    with pytest.raises(GraphApiError) as info:
        list(client.iter_campaigns("act_424242"))
    assert (info.value.code, info.value.subcode, info.value.http_status) == (100, 33, 400)
    assert "act_424242" in str(info.value)


def test_connection_failure_is_transient_and_redacted(token):
    # A port that was free a moment ago: nothing listens there, so the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    governor = RateLimitGovernor(GovernorSettings(base_backoff_seconds=0.001, max_retries=2))
    client = GraphClient(f"http://127.0.0.1:{port}", token, timeout=5, governor=governor)
    with pytest.raises(GraphApiError) as info:
        list(client.iter_ads("act_1001"))
    assert info.value.is_transient and info.value.http_status is None
    assert token not in f"{info.value} {info.value!r}"
    # Retried by the governor before giving up: 1 try + 2 retries.
    assert client.calls == 3 and governor.stats.retries == 2
    assert "gave up after 2 retries" in str(info.value)


def test_client_does_not_install_a_global_default_api(client):
    before = FacebookAdsApi.get_default_api()
    list(client.iter_campaigns("act_1001"))
    assert FacebookAdsApi.get_default_api() is before


def test_client_calls_raise_no_sdk_warnings(client):
    # The SDK warns (and in STRICT_MODE raises) on fields its object classes do not declare and on
    # mistyped params; our default field lists and params must be clean.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(client.iter_insights("act_1001", SINCE, SINCE))
        list(client.iter_campaigns("act_1001"))
        list(client.iter_adsets("act_1001"))
        list(client.iter_ads("act_1001"))


def test_error_text_copied_from_the_sdk_is_redacted(emulator, token, app_secret):
    # The emulator never echoes secrets, so feed the wrapper an SDK error that does (as a proxy
    # or a future API message might), in raw and URL-encoded form.
    client = GraphClient(emulator.url, token + "/+=", app_secret=app_secret)
    secret_token = token + "/+="
    body = {
        "error": {
            "message": f"bad token {secret_token} / {quote(secret_token, safe='')} / {app_secret}",
            "type": "OAuthException",
            "code": 190,
            "fbtrace_id": "abc",
        }
    }
    exc = FacebookRequestError("Call was not successful", {}, 400, {}, json.dumps(body))
    error = client._wrap(exc)
    assert error.code == 190 and error.fbtrace_id == "abc"
    assert "[REDACTED]" in str(error)
    for secret in (secret_token, quote(secret_token, safe=""), app_secret):
        assert secret not in str(error)


def test_retryable_classification():
    assert not GraphApiError("bad token", code=190, http_status=400).retryable
    assert not GraphApiError("no permission", code=200, http_status=403).retryable
    assert GraphApiError("unknown", code=1, http_status=500).retryable
    assert GraphApiError("gateway", http_status=502).retryable
    assert GraphApiError("throttled", code=17, http_status=400, is_transient=True).retryable
