"""Staying current with Meta, end to end: the real facebook-business SDK over HTTP to the
emulator, which serves v26.0 and v27.0, still serves v25.0 with a deprecation warning, and
refuses v24.0 (expired), unknown versions and insights fields Meta no longer accepts."""

from __future__ import annotations

import json
from datetime import date
from urllib.parse import quote

import pytest
from graph_emulator import EmulatorData, GraphEmulator

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.fields import INSIGHT_FIELDS
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.ids import sdk_api_version
from crm_pipeline.facebook.usage_headers import REACH_THROTTLE, parse_usage

SINCE, UNTIL = date(2026, 2, 2), date(2026, 2, 4)
WARNING = (
    "The call is from a version of the Ads API which will be deprecated on 2027-02-10. "
    "Please upgrade to v27.0."
)


def client_for(emulator: GraphEmulator, token: str, version: str | None, **kwargs) -> GraphClient:
    # One governor of the test's own, with no waits: shared process-wide state stays out.
    governor = RateLimitGovernor(GovernorSettings(base_backoff_seconds=0.001, jitter=0.0))
    return GraphClient(
        emulator.url, token, api_version=version, timeout=10, governor=governor, **kwargs
    )


def test_unset_means_the_sdks_own_version(emulator, token):
    client = client_for(emulator, token, None)
    assert client.api_version == sdk_api_version() == "v26.0"
    list(client.iter_insights("act_1001", SINCE, SINCE))
    assert {r.path.split("/")[1] for r in emulator.requests} == {sdk_api_version()}
    assert client.notices.notices == []


def test_a_deprecated_version_is_served_and_its_warning_kept_once(emulator, token):
    client = client_for(emulator, token, "v25.0")
    rows = list(client.iter_insights("act_1001", SINCE, UNTIL, limit=10))
    assert rows and client.calls == len(emulator.requests) > 1  # every page carried it
    assert client.notices.notices == [WARNING]
    assert client.notices.unreported() == [WARNING]


@pytest.mark.parametrize("version", ["v26.0", "v27.0"])
def test_current_versions_carry_no_warning(emulator, token, version):
    client = client_for(emulator, token, version)
    assert list(client.iter_insights("act_1001", SINCE, SINCE))
    assert client.notices.notices == []


def test_warnings_are_redacted_like_errors(token):
    # A warning that (absurdly) echoes the token must not carry it into logs or metadata.
    with GraphEmulator(EmulatorData(seed=7), expected_token=token) as emulator:
        client = client_for(emulator, token, "v25.0")
        client.notices.add(f"{WARNING} token={token}")
    assert client.notices.notices == [f"{WARNING} token=[REDACTED]"]


def test_an_expired_version_fails_at_once_naming_it_and_the_fix(emulator, token):
    client = client_for(emulator, token, "v24.0")
    with pytest.raises(GraphApiError) as caught:
        list(client.iter_insights("act_1001", SINCE, UNTIL))
    error = caught.value
    message = str(error)
    assert error.code == 2635 and not error.retryable
    assert "Graph API version v24.0 has expired" in message
    fix = f"set FB_API_VERSION to v27.0 (or unset it to use the SDK's own, {sdk_api_version()})"
    assert fix in message
    assert "upgrade facebook-business" in message
    assert token not in message
    # Not retried by the governor: one request reached the server.
    assert len(emulator.requests) == 1 and client.calls == 1


def test_an_unknown_version_fails_at_once_naming_it(emulator, token):
    client = client_for(emulator, token, "v99.0")
    with pytest.raises(GraphApiError) as caught:
        client.read_ad_account("act_1001")
    assert "Graph API version v99.0 is not one Meta serves" in str(caught.value)
    assert not caught.value.retryable
    assert len(emulator.requests) == 1


def test_a_refused_insights_field_fails_at_once_naming_it(emulator, token):
    client = client_for(emulator, token, None)
    fields = (*INSIGHT_FIELDS, "nope_x")
    with pytest.raises(GraphApiError) as caught:
        list(client.iter_insights("act_1001", SINCE, UNTIL, fields=fields))
    message = str(caught.value)
    assert caught.value.code == 100 and not caught.value.retryable
    assert "Meta refused the field 'nope_x'" in message
    assert "remove it from crm_pipeline/facebook/fields.py or from the custom insights" in message
    assert len(emulator.requests) == 1


def test_the_reach_throttle_of_insights_with_breakdowns_is_paced_on(emulator, token, http_get):
    day = quote('{"since":"2026-02-02","until":"2026-02-02"}')
    params = (
        "fields=reach,frequency,impressions&breakdowns=age&level=ad"
        f"&time_increment=1&time_range={day}"
    )
    url = f"{emulator.url}/v26.0/act_1001/insights?{params}&access_token={token}"
    status, _, _, headers = http_get(url)
    assert status == 200
    wire = json.loads(headers.get(REACH_THROTTLE))  # any case
    usage = parse_usage(headers.items())
    assert usage.by_header[REACH_THROTTLE] == wire["acc_id_util_pct"]

    client = client_for(emulator, token, None)
    account = client.account("act_1001")
    fields = ["ad_id", "reach", "frequency"]
    query = {
        "breakdowns": ["age"],
        "level": "ad",
        "time_increment": "1",
        "time_range": {"since": "2026-02-03", "until": "2026-02-03"},
    }
    list(client.iterate(lambda: account.get_insights(fields=fields, params=query)))
    # The other usage headers stay under 5%: the governor's usage is the reach throttle's, one
    # more broken-down reach query on (each adds the same points).
    assert wire["acc_id_util_pct"] > 5
    assert client.governor.usage_pct == 2 * wire["acc_id_util_pct"]
