"""Fault injection in the Graph API emulator: the plan itself, the wire answers, the SDK's view."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError
from graph_emulator import Fault, FaultPlan, GraphEmulator

TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-03"})


def campaigns_url(emu: GraphEmulator, token: str, account: str = "act_1001") -> str:
    query = urlencode({"access_token": token, "fields": "id,name"})
    return f"{emu.url}/v26.0/{account}/campaigns?{query}"


def insights_url(emu: GraphEmulator, token: str) -> str:
    query = urlencode(
        {
            "access_token": token,
            "level": "ad",
            "time_increment": "1",
            "time_range": TIME_RANGE,
            "fields": "ad_id,spend",
        }
    )
    return f"{emu.url}/v26.0/act_1001/insights?{query}"


def sdk_account(emu: GraphEmulator, token: str, account: str = "act_1001") -> AdAccount:
    session = FacebookSession(None, None, token)
    session.GRAPH = emu.url
    session.requests.trust_env = False  # straight to 127.0.0.1, whatever the environment says
    return AdAccount(account, api=FacebookAdsApi(session, "v26.0"))


# -- the plan --------------------------------------------------------------------------------------


def test_take_consumes_counts_in_order_and_filters_by_kind_and_path():
    plan = FaultPlan()
    plan.add(
        Fault("throttle", count=2, path="/insights"),
        Fault("transient", count=1),
    )
    assert plan.take("throttle", "GET", "/v26.0/act_1/campaigns") is None  # path filter
    assert plan.take({"reduce_data"}, "GET", "/v26.0/act_1/insights") is None  # kind filter
    hit = plan.take(None, "GET", "/v26.0/act_1/insights")
    assert (hit.kind, hit.count) == ("throttle", 1)
    assert [(f.kind, f.count) for f in plan.remaining] == [("throttle", 1), ("transient", 1)]
    assert plan.take(None, "GET", "/v26.0/act_1/campaigns").kind == "transient"
    assert plan.take(["throttle"], "GET", "/v26.0/act_1/insights").kind == "throttle"
    assert plan.remaining == []
    assert plan.take(None, "GET", "/v26.0/act_1/insights") is None


def test_plan_copies_added_faults_and_can_be_cleared():
    fault = Fault("transient", count=3)
    plan = FaultPlan([fault])
    plan.take("transient", "GET", "/x")
    assert fault.count == 3, "the caller's Fault object is not consumed"
    plan.remaining.clear()
    assert plan.take(None, "GET", "/x") is None
    plan.add(Fault("transient"))
    plan.clear()
    assert len(plan) == 0


def test_take_is_thread_safe():
    plan = FaultPlan([Fault("transient", count=500)])
    hits = []

    def worker():
        for _ in range(200):
            if plan.take(None, "GET", "/p") is not None:
                hits.append(1)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(hits) == 500
    assert plan.remaining == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "explode"},
        {"kind": "throttle", "count": 0},
        {"kind": "throttle", "code": 190},
        {"kind": "throttle", "eta_minutes": -1},
        {"kind": "permission", "code": 17},
        {"kind": "transient", "count": True},
    ],
)
def test_invalid_faults_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_from_json_builds_the_plan():
    plan = FaultPlan.from_json(
        '[{"kind": "throttle", "code": 80004, "count": 2, "eta_minutes": 3, "path": "/ads"},'
        ' {"kind": "async_fail", "count": 2}]'
    )
    assert plan.remaining == [
        Fault("throttle", count=2, code=80004, eta_minutes=3, path="/ads"),
        Fault("async_fail", count=2),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"kind": "throttle"}', "JSON list"),
        ("[1]", "fault #0 must be a JSON object"),
        ('[{"count": 1}]', "has no 'kind'"),
        ('[{"kind": "throttle", "colour": "red"}]', "unknown keys ['colour']"),
        ('[{"kind": "transient"}, {"kind": "nope"}]', "fault #1: unknown fault kind 'nope'"),
        ('[{"kind": "throttle", "code": 1}]', "not a Meta rate-limit code"),
    ],
)
def test_from_json_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FaultPlan.from_json(text)


def test_from_env(monkeypatch):
    monkeypatch.delenv("CRM_EMULATOR_FAULTS", raising=False)
    assert FaultPlan.from_env().remaining == []
    monkeypatch.setenv("CRM_EMULATOR_FAULTS", "  ")
    assert FaultPlan.from_env().remaining == []
    monkeypatch.setenv("CRM_EMULATOR_FAULTS", '[{"kind": "reduce_data", "count": 4}]')
    assert FaultPlan.from_env().remaining == [Fault("reduce_data", count=4)]
    monkeypatch.setenv("MY_FAULTS", "[{]")
    with pytest.raises(ValueError, match="^MY_FAULTS: fault plan is not valid JSON"):
        FaultPlan.from_env("MY_FAULTS")


def test_emulator_reads_faults_and_latency_from_env(monkeypatch, token, http_get):
    monkeypatch.setenv("CRM_EMULATOR_FAULTS", '[{"kind": "transient", "count": 1}]')
    monkeypatch.setenv("CRM_EMULATOR_LATENCY_MS", "5")
    with GraphEmulator(expected_token=token) as emu:
        assert emu.latency_ms == 5
        assert http_get(campaigns_url(emu, token))[0] == 500
        assert http_get(campaigns_url(emu, token))[0] == 200
    monkeypatch.setenv("CRM_EMULATOR_LATENCY_MS", "soon")
    with pytest.raises(ValueError, match="CRM_EMULATOR_LATENCY_MS"):
        GraphEmulator()
    monkeypatch.setenv("CRM_EMULATOR_LATENCY_MS", "0")
    monkeypatch.setenv("CRM_EMULATOR_FAULTS", '[{"kind": "bogus"}]')
    with pytest.raises(ValueError, match="CRM_EMULATOR_FAULTS"):
        GraphEmulator()


def test_default_is_no_faults(monkeypatch, emulator):
    monkeypatch.delenv("CRM_EMULATOR_FAULTS", raising=False)
    assert isinstance(GraphEmulator().faults, FaultPlan)
    assert GraphEmulator().faults.remaining == []
    assert emulator.faults.remaining == []


# -- wire answers ----------------------------------------------------------------------------------


def _buc(headers) -> dict:
    return json.loads(headers["X-Business-Use-Case-Usage"])


def test_throttle_answer_on_the_wire(emulator, token, http_get):
    emulator.faults.add(Fault("throttle", code=17, subcode=2446079, eta_minutes=7, count=2))
    for _ in range(2):
        status, body, raw, headers = http_get(campaigns_url(emulator, token))
        assert status == 400
        error = body["error"]
        assert error["message"] == "(#17) User request limit reached"
        assert (error["type"], error["code"], error["error_subcode"]) == (
            "OAuthException",
            17,
            2446079,
        )
        assert error["is_transient"] is True
        assert error["error_user_title"]
        assert error["fbtrace_id"] == headers["x-fb-trace-id"]
        assert "data" not in body
        (entry,) = _buc(headers)["1001"]
        assert entry["estimated_time_to_regain_access"] == 7
        assert entry["type"] == "ads_management"
    status, body, _, headers = http_get(campaigns_url(emulator, token))
    assert status == 200 and len(body["data"]) == 2
    assert _buc(headers)["1001"][0]["estimated_time_to_regain_access"] == 0


@pytest.mark.parametrize(
    ("code", "subcode", "buc_type", "message"),
    [
        (80000, 2446079, "ads_insights", r"^\(#80000\) There have been too many calls"),
        (80004, 2446079, "ads_management", r"^\(#80004\) There have been too many calls"),
        (613, 1487742, "ads_management", r"^\(#613\) There have been too many calls"),
        (4, None, "ads_management", r"^\(#4\) Application request limit reached$"),
    ],
)
def test_throttle_codes_report_eta_in_buc_header(
    emulator, token, http_get, code, subcode, buc_type, message
):
    emulator.faults.add(Fault("throttle", code=code, eta_minutes=2))
    status, body, _, headers = http_get(campaigns_url(emulator, token))
    assert status == 400
    assert body["error"]["code"] == code
    assert body["error"].get("error_subcode") == subcode
    assert re.search(message, body["error"]["message"])
    (entry,) = _buc(headers)["1001"]
    assert (entry["type"], entry["estimated_time_to_regain_access"]) == (buc_type, 2)


def test_page_throttle_32_has_no_eta(emulator, token, http_get):
    emulator.faults.add(Fault("throttle", code=32, eta_minutes=9, path="/leadgen_forms"))
    query = urlencode({"access_token": token})
    status, body, _, headers = http_get(f"{emulator.url}/v26.0/2001/leadgen_forms?{query}")
    assert (status, body["error"]["code"]) == (400, 32)
    assert body["error"]["message"] == "(#32) Page request limit reached"
    assert _buc(headers)["2001"][0]["estimated_time_to_regain_access"] == 0


@pytest.mark.parametrize(
    ("fault", "status", "code", "transient", "message"),
    [
        (
            Fault("transient"),
            500,
            2,
            True,
            "An unexpected error has occurred. Please retry your request later.",
        ),
        (
            Fault("reduce_data"),
            500,
            1,
            False,
            "Please reduce the amount of data you're asking for, then retry your request",
        ),
        (
            Fault("invalid_token"),
            400,
            190,
            False,
            "Invalid OAuth access token - Cannot parse access token",
        ),
        (Fault("permission"), 400, 200, False, "(#200) Requires ads_read permission"),
        (Fault("permission", code=10), 400, 10, False, "(#10) Application does not have"),
    ],
)
def test_error_faults_on_the_wire(
    emulator, token, http_get, fault, status, code, transient, message
):
    emulator.faults.add(fault)
    got_status, body, raw, headers = http_get(insights_url(emulator, token))
    assert got_status == status
    error = body["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert error["is_transient"] is transient
    assert error["message"].startswith(message)
    assert token not in raw
    assert "X-App-Usage" in headers and "X-Business-Use-Case-Usage" in headers
    assert http_get(insights_url(emulator, token))[0] == 200, "one count, one failure"


def test_fault_path_filter_spares_other_paths(emulator, token, http_get):
    emulator.faults.add(Fault("transient", count=1, path="act_1002/campaigns"))
    assert http_get(campaigns_url(emulator, token, "act_1001"))[0] == 200
    assert http_get(campaigns_url(emulator, token, "act_1002"))[0] == 500
    assert http_get(campaigns_url(emulator, token, "act_1002"))[0] == 200


# -- through the SDK -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code", "subcode", "transient"),
    [
        (Fault("throttle", code=80000, eta_minutes=4), 400, 80000, 2446079, True),
        (Fault("throttle", code=613, subcode=1487742), 400, 613, 1487742, True),
        (Fault("transient"), 500, 2, None, True),
        (Fault("reduce_data"), 500, 1, None, False),
        (Fault("invalid_token"), 400, 190, None, False),
        (Fault("permission"), 400, 200, None, False),
    ],
)
def test_sdk_sees_meta_errors(emulator, token, fault, status, code, subcode, transient):
    emulator.faults.add(fault)
    account = sdk_account(emulator, token)
    params = {"level": "ad", "time_increment": "1", "time_range": json.loads(TIME_RANGE)}
    with pytest.raises(FacebookRequestError) as caught:
        account.get_insights(fields=["ad_id", "spend"], params=params)
    error = caught.value
    assert error.http_status() == status
    assert error.api_error_code() == code
    assert error.api_error_subcode() == subcode
    assert error.api_transient_error() is transient
    usage = error.http_headers()
    assert json.loads(usage["x-app-usage"])["call_count"] >= 0
    assert "x-fb-ads-insights-throttle" in usage
    if fault.kind == "throttle" and fault.code == 80000:
        (entry,) = json.loads(usage["x-business-use-case-usage"])["1001"]
        assert (entry["type"], entry["estimated_time_to_regain_access"]) == ("ads_insights", 4)
    rows = account.get_insights(fields=["ad_id", "spend"], params=params)
    assert len(list(rows)) == 24  # the fault is used up; the retry gets the data


def test_faulted_call_does_not_advance_paging(emulator, token):
    account = sdk_account(emulator, token)
    pages = account.get_campaigns(fields=["id"], params={"limit": 1})
    first = next(iter(pages))
    emulator.faults.add(Fault("transient", path="/campaigns"))
    with pytest.raises(FacebookRequestError):
        list(pages)  # the second page's call fails...
    # ...and a fresh iteration still sees every campaign exactly once.
    ids = [c["id"] for c in account.get_campaigns(fields=["id"], params={"limit": 1})]
    assert ids[0] == first["id"] and len(ids) == len(set(ids)) == 2


# -- latency and the command line ------------------------------------------------------------------


def test_latency_is_applied(token, http_get):
    with GraphEmulator(expected_token=token, latency_ms=150) as emu:
        started = time.monotonic()
        status = http_get(campaigns_url(emu, token))[0]
        elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed >= 0.15
    with GraphEmulator(expected_token=token, latency_ms=0) as emu:
        started = time.monotonic()
        http_get(campaigns_url(emu, token))
        assert time.monotonic() - started < 0.15


def test_module_entry_point_honours_env_faults_and_latency(token, http_get, emulator_process):
    faults = '[{"kind": "throttle", "code": 80004, "count": 1}]'
    _, url = emulator_process("--latency-ms", "120", env={"CRM_EMULATOR_FAULTS": faults})
    query = urlencode({"access_token": token, "fields": "id"})
    started = time.monotonic()
    status, body, _, _ = http_get(f"{url}/v26.0/act_1001/campaigns?{query}")
    assert time.monotonic() - started >= 0.12
    assert (status, body["error"]["code"]) == (400, 80004)
    assert http_get(f"{url}/v26.0/act_1001/campaigns?{query}")[0] == 200


def test_module_entry_point_rejects_a_bad_fault_plan():
    env = {**os.environ, "CRM_EMULATOR_FAULTS": "[oops"}
    result = subprocess.run(
        [sys.executable, "-m", "graph_emulator"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "CRM_EMULATOR_FAULTS" in result.stderr
