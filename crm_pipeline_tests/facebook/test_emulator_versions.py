"""Marketing API versions and retired insight fields in the emulator, answered as Meta answers."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.apiconfig import ads_api_config
from facebook_business.exceptions import FacebookRequestError
from graph_emulator import EmulatorData, GraphEmulator, VersionTable

WARNING = "X-Ad-Api-Version-Warning"
EXPIRED = (
    "(#2635) You are calling a deprecated version of the Ads API. "
    "Please update to the latest version: v27.0."
)
TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-02"})


def campaigns(emu, token, version: str) -> str:
    return f"{emu.url}/{version}/act_1001/campaigns?{urlencode({'access_token': token})}"


@pytest.mark.parametrize("version", ["v26.0", "v27.0"])
def test_current_versions_are_served_without_a_warning(emulator, token, http_get, version):
    status, body, _, headers = http_get(campaigns(emulator, token, version))
    assert status == 200, body
    assert headers["facebook-api-version"] == version
    assert WARNING not in headers


def test_a_deprecated_version_is_served_with_meta_s_warning(emulator, token, http_get):
    status, _, _, headers = http_get(campaigns(emulator, token, "v25.0"))
    assert status == 200
    assert headers[WARNING] == (
        "The call is from a version of the Ads API which will be deprecated on 2027-02-10. "
        "Please upgrade to v27.0."
    )
    # Errors on that version carry the warning too: the caller learns either way.
    status, _, _, headers = http_get(f"{emulator.url}/v25.0/act_1001/bogus?access_token={token}")
    assert status == 400 and WARNING in headers


@pytest.mark.parametrize("version", ["v24.0", "v19.0", "v3.2"])
def test_an_expired_version_fails_with_2635(emulator, token, http_get, version):
    for url in (
        campaigns(emulator, token, version),
        f"{emulator.url}/{version}/2001/leadgen_forms?access_token={token}",
        f"{emulator.url}/{version}/me?access_token={token}",
    ):
        status, body, _, headers = http_get(url)
        assert (status, body["error"]["code"], body["error"]["type"]) == (
            400,
            2635,
            "OAuthException",
        )
        assert body["error"]["message"] == EXPIRED
        assert WARNING not in headers


def test_an_unknown_future_version_is_an_unknown_path(emulator, token, http_get):
    status, body, _, _ = http_get(campaigns(emulator, token, "v99.0"))
    assert (status, body["error"]["code"]) == (400, 2500)
    assert body["error"]["message"] == "Unknown path components: /v99.0/act_1001/campaigns"


def sdk_api(emu, token: str) -> FacebookAdsApi:
    session = FacebookSession(None, None, token)
    session.GRAPH = emu.url
    session.requests.trust_env = False
    return FacebookAdsApi(session)  # the SDK's default version


def test_the_table_can_deprecate_the_sdk_s_own_version(token):
    sdk_version = ads_api_config["API_VERSION"]
    table = VersionTable(current=("v27.0",), deprecated={sdk_version: "2026-09-01"})
    with GraphEmulator(EmulatorData(), expected_token=token, versions=table) as emu:
        response = sdk_api(emu, token).call("GET", ("act_1001", "campaigns"), {"fields": "id"})
        assert emu.requests[0].path == f"/{sdk_version}/act_1001/campaigns"
    assert len(response.json()["data"]) == 2
    assert response.headers()[WARNING] == (
        "The call is from a version of the Ads API which will be deprecated on 2026-09-01. "
        "Please upgrade to v27.0."
    )


def test_the_sdk_sees_2635_on_an_expired_version(token):
    table = VersionTable(current=("v28.0",), deprecated={})
    with (
        GraphEmulator(EmulatorData(), expected_token=token, versions=table) as emu,
        pytest.raises(FacebookRequestError) as raised,
    ):
        list(AdAccount("act_1001", api=sdk_api(emu, token)).get_campaigns(fields=["id"]))
    assert raised.value.api_error_code() == 2635
    assert raised.value.api_error_message().endswith("latest version: v28.0.")


def test_a_version_table_needs_a_current_version():
    with pytest.raises(ValueError):
        VersionTable(current=())
    with pytest.raises(ValueError):
        VersionTable(current=("26.0",))


# -- insight fields Meta does not accept -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [("impressions,relevance_score", "relevance_score is"), ("bogus,age", "bogus, age are")],
)
def test_an_unknown_insights_field_is_not_valid_for_fields_param(
    emulator, token, http_get, fields, invalid
):
    query = {
        "access_token": token,
        "level": "ad",
        "time_increment": "1",
        "time_range": TIME_RANGE,
        "fields": fields,
    }
    status, body, _, _ = http_get(f"{emulator.url}/v26.0/act_1001/insights?{urlencode(query)}")
    assert (status, body["error"]["code"]) == (400, 100)
    assert body["error"]["message"] == (
        f"(#100) {invalid} not valid for fields param. please check "
        "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/ "
        "for all valid values"
    )


def test_other_edges_keep_their_unknown_field_error(emulator, token, http_get):
    query = urlencode({"access_token": token, "fields": "id,bogus"})
    status, body, _, _ = http_get(f"{emulator.url}/v26.0/act_1001/campaigns?{query}")
    assert (status, body["error"]["code"]) == (400, 100)
    assert body["error"]["message"] == (
        "(#100) Tried accessing nonexisting field (bogus) on node type (Campaign)"
    )
