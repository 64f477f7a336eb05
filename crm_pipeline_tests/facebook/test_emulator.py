"""Wire-format tests for the Graph API emulator, over real HTTP with urllib (no SDK)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from datetime import date, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from graph_emulator import EmulatorData, GraphEmulator

SINCE, UNTIL = date(2026, 2, 2), date(2026, 2, 8)  # 7 days
TIME_RANGE = json.dumps({"since": SINCE.isoformat(), "until": UNTIL.isoformat()})
FIELDS = "account_id,campaign_id,adset_id,ad_id,impressions,clicks,spend,reach"


def insights_url(emu: GraphEmulator, token: str, version: str = "v26.0", **params: str) -> str:
    query = {
        "access_token": token,
        "level": "ad",
        "time_increment": "1",
        "time_range": TIME_RANGE,
        "fields": FIELDS,
        **params,
    }
    return f"{emu.url}/{version}/act_1001/insights?{urlencode(query)}"


def follow_pages(http_get, url: str) -> list[dict]:
    """Fetch ``url`` and every ``next`` link after it; returns the page bodies in order."""
    pages = []
    while url:
        status, body, _, _ = http_get(url)
        assert status == 200, body
        pages.append(body)
        assert len(pages) < 100, "paging does not terminate"
        url = body.get("paging", {}).get("next")
    return pages


# -- paging ----------------------------------------------------------------------------------------


def test_cursor_paging_links_and_last_page(emulator, token, http_get):
    # act_1001 has 12 ads: 12 x 7 days = 84 rows -> 9 pages of 10, the last one partial.
    pages = follow_pages(http_get, insights_url(emulator, token, limit="10"))

    assert [len(p["data"]) for p in pages] == [10] * 8 + [4]
    for page in pages[:-1]:
        next_url = page["paging"]["next"]
        assert next_url.startswith(f"{emulator.url}/v26.0/act_1001/insights?")
        query = parse_qs(urlsplit(next_url).query)
        # Meta repeats every original parameter in `next`, and moves the cursor forward.
        assert query["after"] == [page["paging"]["cursors"]["after"]]
        assert query["time_range"] == [TIME_RANGE]
        assert query["fields"] == [FIELDS]
        assert query["limit"] == ["10"]
    last = pages[-1]
    assert "next" not in last["paging"]
    assert set(last["paging"]["cursors"]) == {"before", "after"}

    rows = [row for page in pages for row in page["data"]]
    keys = [(row["date_start"], row["ad_id"]) for row in rows]
    assert len(set(keys)) == 84
    assert keys == sorted(keys)  # sorted by date, then ad id


def test_cursors_are_opaque_base64(emulator, token, http_get):
    _, body, _, _ = http_get(insights_url(emulator, token, limit="5"))
    for cursor in body["paging"]["cursors"].values():
        assert re.fullmatch(r"[A-Za-z0-9_\-]+=*", cursor)
        assert not cursor.isdigit()


def test_exact_multiple_of_limit_has_no_extra_page(emulator, token, http_get):
    pages = follow_pages(http_get, insights_url(emulator, token, limit="12"))
    assert [len(p["data"]) for p in pages] == [12] * 7
    assert "next" not in pages[-1]["paging"]
    assert all("next" in p["paging"] for p in pages[:-1])


def test_default_limit_is_used_without_limit_param(token, http_get):
    with GraphEmulator(expected_token=token, default_limit=7) as emu:
        _, body, _, _ = http_get(insights_url(emu, token))
    assert len(body["data"]) == 7
    assert "next" in body["paging"]


def test_empty_page_has_no_paging_block(emulator, token, http_get):
    # A cursor past the last row yields Meta's bare empty result.
    pages = follow_pages(http_get, insights_url(emulator, token, limit="100"))
    after = pages[-1]["paging"]["cursors"]["after"]
    status, body, raw, _ = http_get(insights_url(emulator, token, limit="100", after=after))
    assert status == 200
    assert body == {"data": []}, raw


def test_object_edges_page_too(emulator, token, http_get):
    query = urlencode({"access_token": token, "fields": "id,name", "limit": "5", "summary": "true"})
    pages = follow_pages(http_get, f"{emulator.url}/v26.0/act_1002/ads?{query}")
    assert [len(p["data"]) for p in pages] == [5, 5, 2]
    assert "next" not in pages[-1]["paging"]


# -- wire format -----------------------------------------------------------------------------------


def test_numbers_are_strings_on_the_wire(emulator, token, http_get):
    status, body, raw, headers = http_get(insights_url(emulator, token, limit="50"))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(headers["X-App-Usage"])["call_count"] >= 0
    for row in body["data"]:
        for name in ("impressions", "clicks", "reach"):
            assert isinstance(row[name], str) and row[name].isdigit(), row
        assert re.fullmatch(r"\d+\.\d{2}", row["spend"]), row
        assert row["account_id"] == "1001"  # digits, without "act_"
        assert int(row["clicks"]) <= int(row["impressions"])
        assert int(row["reach"]) <= int(row["impressions"])
    assert not re.search(r'"impressions":\d', raw)


def test_only_requested_fields_plus_dates(emulator, token, http_get):
    _, comma, _, _ = http_get(insights_url(emulator, token, fields="ad_id,spend", limit="3"))
    # The SDK can also send fields JSON-encoded; both spellings must mean the same thing.
    as_json = json.dumps(["ad_id", "spend"])
    _, listed, _, _ = http_get(insights_url(emulator, token, fields=as_json, limit="3"))
    assert comma["data"] == listed["data"]
    assert set(comma["data"][0]) == {"ad_id", "spend", "date_start", "date_stop"}


def test_unknown_field_is_rejected(emulator, token, http_get):
    status, body, _, _ = http_get(insights_url(emulator, token, fields="ad_id,bogus"))
    assert status == 400
    assert body["error"]["code"] == 100
    assert "bogus" in body["error"]["message"]


def test_time_range_is_respected(emulator, token, http_get):
    day = date(2026, 3, 10)
    time_range = json.dumps({"since": day.isoformat(), "until": day.isoformat()})
    pages = follow_pages(http_get, insights_url(emulator, token, time_range=time_range))
    rows = [row for page in pages for row in page["data"]]
    assert len(rows) == 12
    assert {(r["date_start"], r["date_stop"]) for r in rows} == {(day.isoformat(),) * 2}


# Meta serves only the versions of its table (test_emulator_versions.py has the expired ones).
@pytest.mark.parametrize("version", ["v25.0", "v26.0", "v27.0"])
def test_served_versions_are_accepted(emulator, token, http_get, version):
    status, body, _, headers = http_get(insights_url(emulator, token, version=version, limit="2"))
    assert status == 200, body
    assert len(body["data"]) == 2
    assert headers["facebook-api-version"] == version


@pytest.mark.parametrize("prefix", ["", "/latest", "/19.0", "/v19"])
def test_unversioned_path_is_rejected(emulator, token, http_get, prefix):
    query = urlencode({"access_token": token, "fields": "id"})
    status, body, _, _ = http_get(f"{emulator.url}{prefix}/act_1001/campaigns?{query}")
    assert status == 400
    assert body["error"]["type"] == "OAuthException"
    assert isinstance(body["error"]["code"], int)


# -- errors ----------------------------------------------------------------------------------------


def test_missing_token_error_body(emulator, http_get):
    status, body, _, _ = http_get(f"{emulator.url}/v26.0/act_1001/campaigns")
    assert status == 400
    error = body["error"]
    assert list(error) == ["message", "type", "code", "is_transient", "fbtrace_id"]
    assert error["message"] == (
        "An active access token must be used to query information about the current user."
    )
    assert (error["type"], error["code"], error["is_transient"]) == ("OAuthException", 2500, False)
    assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]


def test_invalid_token_is_not_echoed(emulator, http_get):
    bad = "EAAwrong-token-55555"
    status, body, raw, _ = http_get(insights_url(emulator, bad))
    assert status == 400
    assert body["error"]["code"] == 190
    assert body["error"]["type"] == "OAuthException"
    assert "Invalid OAuth access token" in body["error"]["message"]
    assert bad not in raw


def test_unknown_account(emulator, token, http_get):
    query = urlencode({"access_token": token})
    status, body, _, _ = http_get(f"{emulator.url}/v26.0/act_999/campaigns?{query}")
    assert status == 400
    error = body["error"]
    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert error["message"].startswith(
        "Unsupported get request. Object with ID 'act_999' does not exist"
    )
    assert list(error) == ["message", "type", "code", "error_subcode", "is_transient", "fbtrace_id"]


@pytest.mark.parametrize(
    "params",
    [
        {"level": "keyword"},
        {"time_increment": "all_days"},
        {"time_range": "not json"},
        {"time_range": json.dumps({"since": "2026-02-08", "until": "2026-02-01"})},
        {"breakdowns": "bogus"},
        {"date_preset": "last_7d"},
        {"limit": "zero"},
        {"after": "!!!"},
    ],
)
def test_unsupported_insight_params_give_code_100(emulator, token, http_get, params):
    status, body, _, _ = http_get(insights_url(emulator, token, **params))
    assert status == 400
    assert body["error"]["code"] == 100


def test_request_log_never_holds_secrets(emulator, token, http_get):
    http_get(insights_url(emulator, token, appsecret_proof="proof123", limit="1", summary="true"))
    http_get(f"{emulator.url}/v26.0/act_1001/ads?{urlencode({'access_token': token})}")
    records = emulator.requests
    assert [(r.method, r.path) for r in records] == [
        ("GET", "/v26.0/act_1001/insights"),
        ("GET", "/v26.0/act_1001/ads"),
    ]
    assert records[0].params["level"] == "ad"
    assert records[0].params["summary"] == "true"  # ignored, but recorded
    for record in records:
        assert "access_token" not in record.params
        assert "appsecret_proof" not in record.params
    emulator.reset_requests()
    assert emulator.requests == []


# -- data ------------------------------------------------------------------------------------------


def test_data_is_deterministic_per_seed():
    a, b, other = EmulatorData(seed=7), EmulatorData(seed=7), EmulatorData(seed=8)
    for account in a.account_ids:
        assert a.insights(account, SINCE, UNTIL) == b.insights(account, SINCE, UNTIL)
        assert a.campaigns(account) == b.campaigns(account)
        assert a.ads(account) == b.ads(account)
    assert a.insights("act_1001", SINCE, UNTIL) != other.insights("act_1001", SINCE, UNTIL)


def test_insight_rows_are_a_function_of_ad_and_day():
    data = EmulatorData()
    wide = data.insights("act_1002", date(2019, 12, 30), date(2020, 1, 3))
    single = data.insights("act_1002", date(2020, 1, 1), date(2020, 1, 1))
    assert [r for r in wide if r["date_start"] == "2020-01-01"] == single
    assert data.insights("act_1002", UNTIL, SINCE) == []


def test_data_shape():
    data = EmulatorData()
    assert data.account_ids == ["act_1001", "act_1002"]
    assert data.page_id == "2001"
    ids = []
    for account in data.account_ids:
        campaigns, adsets, ads = data.campaigns(account), data.adsets(account), data.ads(account)
        assert (len(campaigns), len(adsets), len(ads)) == (2, 4, 12)
        ids += [o["id"] for o in campaigns + adsets + ads]
        for obj in campaigns + adsets + ads:
            assert obj["account_id"] == account.removeprefix("act_")
            assert re.fullmatch(r"2026-01-\d\dT\d\d:\d\d:\d\d\+0000", obj["created_time"])
            assert obj["updated_time"] >= obj["created_time"]
    assert len(set(ids)) == len(ids) == 36
    assert all(i.isdigit() for i in ids)


def test_data_shape_can_be_scaled_for_benchmarks():
    big = EmulatorData(campaigns_per_account=5, adsets_per_campaign=10, ads_per_adset=10)
    ads = big.ads("act_1001")
    assert (len(big.campaigns("act_1001")), len(big.adsets("act_1001")), len(ads)) == (5, 50, 500)
    assert len({ad["id"] for account in big.account_ids for ad in big.ads(account)}) == 1000
    assert len(big.insights("act_1001", SINCE, SINCE)) == 500
    # The default shape is untouched by the knobs: the small data set tests rely on.
    assert EmulatorData().ads("act_1001") == EmulatorData(ads_per_adset=3).ads("act_1001")
    with pytest.raises(ValueError, match="positive"):
        EmulatorData(ads_per_adset=0)


def test_insights_cover_every_ad_every_day():
    data = EmulatorData()
    rows = data.insights("act_1001", SINCE, UNTIL)
    days = {(SINCE + timedelta(days=i)).isoformat() for i in range(7)}
    ad_ids = {ad["id"] for ad in data.ads("act_1001")}
    assert {(r["date_start"], r["ad_id"]) for r in rows} == {(d, a) for d in days for a in ad_ids}


# -- command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "stdin closed"])
def test_module_entry_point_serves_until_stopped(token, http_get, emulator_process, stop):
    args = ["--seed", "8"] + (["--stop-on-eof"] if stop == "stdin closed" else [])
    proc, url = emulator_process(*args)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    query = urlencode({"access_token": token, "fields": "id"})
    status, body, _, _ = http_get(f"{url}/v26.0/act_1001/campaigns?{query}")
    assert status == 200
    assert len(body["data"]) == 2
    if stop == "stdin closed":
        proc.stdin.close()
    else:
        proc.send_signal(getattr(signal, stop))
    assert proc.wait(timeout=10) == 0, proc.stderr.read()


def test_module_entry_point_binds_the_given_host_and_port(token, http_get, emulator_process):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url = emulator_process("--host", "127.0.0.1", "--port", str(port))
    assert url == f"http://127.0.0.1:{port}"
    query = urlencode({"access_token": token, "fields": "id"})
    assert http_get(f"{url}/v26.0/act_1001/campaigns?{query}")[0] == 200


def test_module_entry_point_refuses_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "graph_emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stdout == "" and "error:" in result.stderr
