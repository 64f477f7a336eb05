"""Async insights report runs in the emulator: POST, status polls, results, failures."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import date
from urllib.parse import urlencode

import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import FacebookAdsApi, FacebookSession
from graph_emulator import EmulatorData, Fault, GraphEmulator

TIME_RANGE = {"since": "2026-02-02", "until": "2026-02-04"}  # 3 days x 12 ads = 36 rows
PARAMS = {
    "level": "ad",
    "time_increment": "1",
    "time_range": json.dumps(TIME_RANGE),
    "fields": json.dumps(["ad_id", "campaign_id", "spend"]),
}


def http_post(url: str, form: dict[str, str]):
    """POST a form body like the SDK does; returns (status, parsed JSON)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=urlencode(form).encode(), method="POST")
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start_job(emu, token, **overrides) -> str:
    status, body = http_post(
        f"{emu.url}/v26.0/act_1001/insights", {"access_token": token, **PARAMS, **overrides}
    )
    assert status == 200, body
    assert set(body) == {"report_run_id"}
    return body["report_run_id"]


def poll(emu, token, http_get, run_id: str) -> dict:
    status, body, _, headers = http_get(
        f"{emu.url}/v26.0/{run_id}?{urlencode({'access_token': token})}"
    )
    assert status == 200, body
    assert "x-fb-ads-insights-throttle" in headers
    return body


def results_url(emu, token, run_id: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{run_id}/insights?{urlencode({'access_token': token, **params})}"


def sdk_account(emu, token) -> AdAccount:
    session = FacebookSession(None, None, token)
    session.GRAPH = emu.url
    session.requests.trust_env = False
    return AdAccount("act_1001", api=FacebookAdsApi(session, "v26.0"))


def test_status_progresses_then_results_page(token, http_get):
    with GraphEmulator(expected_token=token, async_polls_to_complete=4) as emu:
        run_id = start_job(emu, token)
        assert run_id.isdigit()
        seen = [poll(emu, token, http_get, run_id) for _ in range(5)]
        assert [s["async_status"] for s in seen] == [
            "Job Not Started",
            "Job Started",
            "Job Running",
            "Job Completed",
            "Job Completed",
        ]
        percents = [s["async_percent_completion"] for s in seen]
        assert percents[0] == 0 and percents[-1] == 100
        assert percents == sorted(percents)
        done = seen[-1]
        assert done["id"] == run_id and done["account_id"] == "1001"
        assert (done["date_start"], done["date_stop"]) == ("2026-02-02", "2026-02-04")
        assert isinstance(done["time_ref"], int) and done["time_completed"] >= done["time_ref"]
        assert "time_completed" not in seen[0]

        pages, url = [], results_url(emu, token, run_id, limit="10")
        while url:
            status, body, _, _ = http_get(url)
            assert status == 200, body
            pages.append(body)
            url = body["paging"].get("next")
    assert [len(p["data"]) for p in pages] == [10, 10, 10, 6]
    rows = [row for page in pages for row in page["data"]]
    expected = EmulatorData().insights("act_1001", date(2026, 2, 2), date(2026, 2, 4))
    assert [(r["ad_id"], r["date_start"], r["spend"]) for r in rows] == [
        (e["ad_id"], e["date_start"], e["spend"]) for e in expected
    ]


def test_results_before_completion_are_an_error(emulator, token, http_get):
    run_id = start_job(emulator, token)
    status, body, _, _ = http_get(results_url(emulator, token, run_id))
    assert status == 400
    assert body["error"]["code"] == 100
    assert "not completed" in body["error"]["message"]


def test_async_fail_fault_fails_the_next_runs(emulator, token, http_get):
    emulator.faults.add(Fault("async_fail", count=2))
    runs = [start_job(emulator, token) for _ in range(3)]
    finals = []
    for run_id in runs:
        poll(emulator, token, http_get, run_id)
        finals.append(poll(emulator, token, http_get, run_id)["async_status"])
    assert finals == ["Job Failed", "Job Failed", "Job Completed"]
    status, body, _, _ = http_get(results_url(emulator, token, runs[0]))
    assert status == 400 and "Job Failed" in body["error"]["message"]
    assert http_get(results_url(emulator, token, runs[2]))[0] == 200
    assert emulator.faults.remaining == []


def test_async_fail_fault_does_not_hit_sync_calls(emulator, token, http_get):
    emulator.faults.add(Fault("async_fail"))
    query = urlencode({"access_token": token, **PARAMS})
    assert http_get(f"{emulator.url}/v26.0/act_1001/insights?{query}")[0] == 200
    assert len(emulator.faults.remaining) == 1


def test_bad_params_are_rejected_at_creation(emulator, token):
    status, body = http_post(
        f"{emulator.url}/v26.0/act_1001/insights",
        {"access_token": token, **PARAMS, "breakdowns": '["bogus"]'},
    )
    assert (status, body["error"]["code"]) == (400, 100)
    assert emulator.report_runs == []


def test_faulted_poll_does_not_advance_the_job(emulator, token, http_get):
    run_id = start_job(emulator, token)
    emulator.faults.add(Fault("transient", path=f"/{run_id}"))
    status, _, _, _ = http_get(f"{emulator.url}/v26.0/{run_id}?access_token={token}")
    assert status == 500
    assert poll(emulator, token, http_get, run_id)["async_status"] == "Job Not Started"
    assert poll(emulator, token, http_get, run_id)["async_status"] == "Job Completed"


def test_max_jobs_in_flight_is_tracked(emulator, token, http_get):
    first, second = start_job(emulator, token), start_job(emulator, token)
    assert emulator.async_jobs_max_in_flight == 2
    for run_id in (first, second):
        poll(emulator, token, http_get, run_id)
        poll(emulator, token, http_get, run_id)
    third = start_job(emulator, token)
    assert emulator.async_jobs_max_in_flight == 2  # the first two had finished
    fourth = start_job(emulator, token)
    fifth = start_job(emulator, token)
    assert emulator.async_jobs_max_in_flight == 3
    assert {r["id"] for r in emulator.report_runs} == {first, second, third, fourth, fifth}


def test_filtering_applies_to_report_runs(emulator, token, http_get):
    campaign = emulator.data.campaigns("act_1001")[0]["id"]
    filtering = json.dumps([{"field": "campaign.id", "operator": "EQUAL", "value": campaign}])
    run_id = start_job(emulator, token, filtering=filtering)
    poll(emulator, token, http_get, run_id)
    poll(emulator, token, http_get, run_id)
    _, body, _, _ = http_get(results_url(emulator, token, run_id, limit="100"))
    assert len(body["data"]) == 18  # 6 ads of that campaign x 3 days
    assert {row["campaign_id"] for row in body["data"]} == {campaign}


@pytest.mark.parametrize("polls", [1, 3])
def test_the_sdk_async_flow(token, polls):
    with GraphEmulator(expected_token=token, async_polls_to_complete=polls) as emu:
        account = sdk_account(emu, token)
        params = {"level": "ad", "time_increment": "1", "time_range": TIME_RANGE}
        job = account.get_insights(fields=["ad_id", "spend"], params=params, is_async=True)
        statuses = []
        while True:
            job = job.api_get()
            statuses.append(job["async_status"])
            if job["async_status"] == "Job Completed":
                break
            assert len(statuses) < 10
        rows = [dict(row) for row in job.get_result(params={"limit": 7})]
        posted = [r for r in emu.requests if r.method == "POST"]
    assert len(statuses) == polls
    assert len(rows) == 36
    assert len(posted) == 1 and posted[0].path == "/v26.0/act_1001/insights"
    assert posted[0].params["level"] == "ad"  # the form body was read, not just the query
