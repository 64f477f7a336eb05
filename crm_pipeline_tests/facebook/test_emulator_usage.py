"""Rate-limit usage headers on every emulator answer, successes and errors alike."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from graph_emulator import Fault

TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-02"})


def url(emu, token, path: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{path}?{urlencode({'access_token': token, **params})}"


def insights(emu, token) -> str:
    return url(
        emu,
        token,
        "act_1002/insights",
        level="ad",
        time_increment="1",
        time_range=TIME_RANGE,
        fields="ad_id",
    )


def usage(headers) -> dict:
    names = (
        "X-App-Usage",
        "X-Ad-Account-Usage",
        "X-Business-Use-Case-Usage",
        "x-fb-ads-insights-throttle",
    )
    return {name: json.loads(headers[name]) for name in names if headers.get(name) is not None}


def test_insights_success_carries_every_header(emulator, token, http_get):
    status, _, _, headers = http_get(insights(emulator, token))
    assert status == 200
    found = usage(headers)
    assert set(found) == {
        "X-App-Usage",
        "X-Ad-Account-Usage",
        "X-Business-Use-Case-Usage",
        "x-fb-ads-insights-throttle",
    }
    assert set(found["X-App-Usage"]) == {"call_count", "total_cputime", "total_time"}
    assert set(found["X-Ad-Account-Usage"]) == {
        "acc_id_util_pct",
        "reset_time_duration",
        "ads_api_access_tier",
    }
    (entry,) = found["X-Business-Use-Case-Usage"]["1002"]
    assert entry["type"] == "ads_insights"
    assert {"call_count", "total_cputime", "total_time", "estimated_time_to_regain_access"} <= set(
        entry
    )
    assert set(found["x-fb-ads-insights-throttle"]) == {
        "app_id_util_pct",
        "acc_id_util_pct",
        "ads_api_access_tier",
    }
    # Low by default: a fresh emulator must not make a governor slow down.
    assert 0 < found["X-Ad-Account-Usage"]["acc_id_util_pct"] <= 5


def test_object_edges_are_ads_management_without_insights_throttle(emulator, token, http_get):
    _, _, _, headers = http_get(url(emulator, token, "act_1001/ads", fields="id"))
    found = usage(headers)
    assert "x-fb-ads-insights-throttle" not in found
    assert found["X-Business-Use-Case-Usage"]["1001"][0]["type"] == "ads_management"
    assert "X-Ad-Account-Usage" in found


def test_page_calls_are_billed_to_the_page(emulator, token, http_get):
    _, _, _, headers = http_get(url(emulator, token, "2001/conversations"))
    found = usage(headers)
    assert found["X-Business-Use-Case-Usage"]["2001"][0]["type"] == "pages"
    assert "X-Ad-Account-Usage" not in found
    form_id = emulator.data.lead_forms()[0]["id"]
    _, _, _, headers = http_get(url(emulator, token, f"{form_id}/leads"))
    assert usage(headers)["X-Business-Use-Case-Usage"]["2001"][0]["type"] == "leadgen"


@pytest.mark.parametrize("pct", [0, 42.5, 97])
def test_set_usage_pins_every_percentage(emulator, token, http_get, pct):
    emulator.set_usage(pct)
    found = usage(http_get(insights(emulator, token))[3])
    assert found["X-App-Usage"]["call_count"] == round(pct)
    assert found["X-Ad-Account-Usage"]["acc_id_util_pct"] == pct
    assert found["x-fb-ads-insights-throttle"]["acc_id_util_pct"] == pct
    assert found["X-Business-Use-Case-Usage"]["1002"][0]["total_time"] == round(pct)
    emulator.set_usage(None)
    assert usage(http_get(insights(emulator, token))[3])["X-App-Usage"]["call_count"] <= 5


def test_headers_also_on_errors(emulator, token, http_get):
    emulator.set_usage(88)
    # A parameter error, a bad token and an injected fault all still report usage.
    emulator.faults.add(Fault("reduce_data", path="/insights"))
    answers = [
        http_get(url(emulator, token, "act_1001/campaigns", fields="bogus")),
        http_get(url(emulator, "wrong-token", "act_1001/campaigns")),
        http_get(insights(emulator, token)),
    ]
    assert [status for status, *_ in answers] == [400, 400, 500]
    for _, _, _, headers in answers:
        found = usage(headers)
        assert found["X-App-Usage"]["call_count"] == 88
        assert found["X-Ad-Account-Usage"]["acc_id_util_pct"] == 88
    assert "x-fb-ads-insights-throttle" in usage(answers[2][3])


def test_usage_creeps_up_with_calls_but_stays_low(emulator, token, http_get):
    first = usage(http_get(url(emulator, token, "act_1001/ads"))[3])
    for _ in range(30):
        http_get(url(emulator, token, "act_1001/ads"))
    later = usage(http_get(url(emulator, token, "act_1001/ads"))[3])
    before = first["X-Ad-Account-Usage"]["acc_id_util_pct"]
    after = later["X-Ad-Account-Usage"]["acc_id_util_pct"]
    assert before < after <= 5
    assert emulator.usage.calls == 32


def test_set_usage_rejects_nonsense(emulator):
    with pytest.raises(ValueError):
        emulator.set_usage(-1)
