"""The emulator at benchmark scale: more ad accounts, and insights pages served from a cache of
the query's rows that any change to the data invalidates."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import pytest
from graph_emulator import EmulatorData, GraphEmulator
from graph_emulator.insights import RowCache

ACCOUNT_FIELDS = "id,account_id,name,currency,timezone_name,account_status"
SINCE, UNTIL = date(2026, 10, 1), date(2026, 10, 7)
WHEN = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
# Calls whose rows take different paths: plain ad rows, a status filter, labels and ratios,
# sums per campaign split by a breakdown, attribution windows.
QUERIES = [
    {"level": "ad", "fields": "ad_id,impressions,spend,actions"},
    {
        "level": "ad",
        "fields": "ad_id,clicks",
        "filtering": json.dumps(
            [{"field": "ad.effective_status", "operator": "IN", "value": ["ACTIVE"]}]
        ),
    },
    {"level": "ad", "fields": "ad_id,ad_name,ctr,cpc"},
    {"level": "campaign", "fields": "campaign_id,impressions,reach", "breakdowns": "age"},
    {
        "level": "adset",
        "fields": "adset_id,actions",
        "action_attribution_windows": json.dumps(["7d_click"]),
    },
]


def path(account: str, limit: int = 10, **params: str) -> str:
    query = {
        "access_token": "x",
        "level": "ad",
        "time_increment": "1",
        "time_range": json.dumps({"since": SINCE.isoformat(), "until": UNTIL.isoformat()}),
        "limit": str(limit),
        **params,
    }
    return f"/v26.0/{account}/insights?{urlencode(query)}"


def get(emu: GraphEmulator, raw_path: str) -> dict:
    status, body, _ = emu.handle("GET", raw_path)
    assert status == 200, body
    return body


def page_paths(emu: GraphEmulator, first: str) -> list[str]:
    """The path of every page of a call, the first one included."""
    paths, body = [first], get(emu, first)
    while "next" in body.get("paging", {}):
        paths.append(first + f"&after={body['paging']['cursors']['after']}")
        body = get(emu, paths[-1])
    return paths


# -- more accounts ---------------------------------------------------------------------------------


def test_twenty_accounts_are_listed_and_serve_insights(token, http_get):
    data = EmulatorData(accounts=20)
    with GraphEmulator(data) as emu:  # any token: `path` sends a dummy one
        query = urlencode({"access_token": token, "fields": ACCOUNT_FIELDS, "limit": "100"})
        status, body, _, _ = http_get(f"{emu.url}/v26.0/me/adaccounts?{query}")
        assert status == 200
        assert [a["id"] for a in body["data"]] == [f"act_{1000 + n}" for n in range(1, 21)]
        assert body["data"] == data.ad_accounts()
        assert body["data"][:2] == EmulatorData().ad_accounts()
        assert body["data"][19] == {
            "id": "act_1020",
            "account_id": "1020",
            "name": "Northwind Outdoor - Account 20",
            "currency": "USD",
            "timezone_name": "America/New_York",
            "account_status": 1,
        }
        status, node, _, _ = http_get(f"{emu.url}/v26.0/act_1020?{query}")
        assert status == 200 and node == body["data"][19]

        rows = [
            row
            for p in page_paths(emu, path("act_1020", fields="ad_id,impressions"))
            for row in get(emu, p)["data"]
        ]
        ad_ids = {ad["id"] for ad in data.ads("act_1020")}
        assert len(rows) == 12 * 7 and {row["ad_id"] for row in rows} == ad_ids
        status, missing, _ = emu.handle("GET", path("act_1021"))
        assert (status, missing["error"]["code"], missing["error"]["error_subcode"]) == (
            400,
            100,
            33,
        )
    assert data.has_account("1020") and not data.has_account("act_1021")
    assert len({ad["id"] for account in data.account_ids for ad in data.ads(account)}) == 240


def test_more_accounts_leave_the_first_two_unchanged():
    small, big = EmulatorData(), EmulatorData(accounts=20)
    assert small.account_ids == ["act_1001", "act_1002"]
    for account in small.account_ids:
        for read in ("campaigns", "adsets", "ads", "ad_account", "effective_statuses"):
            assert getattr(big, read)(account) == getattr(small, read)(account), read
        assert big.insights(account, date(2026, 9, 1), date(2026, 11, 30)) == small.insights(
            account, date(2026, 9, 1), date(2026, 11, 30)
        )
    assert big.lead_forms() == small.lead_forms()


@pytest.mark.parametrize("accounts", [0, -1, True, 2.0, "3"])
def test_the_accounts_knob_takes_positive_ints(accounts):
    with pytest.raises(ValueError, match="positive"):
        EmulatorData(accounts=accounts)


def test_one_account_is_the_first_one():
    assert EmulatorData(accounts=1).ad_accounts() == EmulatorData().ad_accounts()[:1]


# -- cached insights pages ------------------------------------------------------------------------


def test_pages_of_a_cached_range_are_the_pages_of_an_uncached_emulator():
    emu = GraphEmulator(EmulatorData())
    calls = [path(account, **q) for q in QUERIES for account in ("act_1001", "act_1002")]
    pages = [p for call in calls for p in page_paths(emu, call)]
    assert len(pages) > 2 * len(calls)  # every call spans several pages
    # Interleaved, twice: from the cache each page must still be its own call's.
    for p in pages[::2] + pages[1::2] + pages:
        body = get(emu, p)
        assert body == get(GraphEmulator(EmulatorData()), p), p
        body["data"][0].clear()  # an answer is the caller's: editing it changes no later one
    assert len(emu._ads.reader.cache) == len(calls)


def test_pages_served_from_many_threads_are_the_sequential_ones():
    emu = GraphEmulator(EmulatorData(campaigns_per_account=3))
    calls = [path("act_1001", **q) for q in QUERIES[:3]]
    pages = [p for call in calls for p in page_paths(GraphEmulator(emu.data), call)]
    # Each expected page from an emulator of its own: nothing cached but that page's call.
    expected = [get(GraphEmulator(emu.data), p) for p in pages]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda p: get(emu, p), pages * 4)) == expected * 4


def test_a_status_change_between_two_identical_calls_shows_in_the_second():
    emu = GraphEmulator(EmulatorData())
    call = path("act_1001", limit=500, fields="ad_id,impressions")
    before = get(emu, call)["data"]
    ad_id = before[0]["ad_id"]
    emu.data.set_status(ad_id, "DELETED", WHEN)
    after = get(emu, call)["data"]
    assert ad_id in {row["ad_id"] for row in before}
    assert ad_id not in {row["ad_id"] for row in after}
    assert after == [row for row in before if row["ad_id"] != ad_id]


def test_a_rename_between_two_identical_calls_shows_in_the_second():
    emu = GraphEmulator(EmulatorData())
    call = path("act_1001", limit=500, fields="ad_id,ad_name")
    ad_id = get(emu, call)["data"][0]["ad_id"]
    emu.data.touch(ad_id, WHEN, name="Renamed ad")
    names = {row["ad_name"] for row in get(emu, call)["data"] if row["ad_id"] == ad_id}
    assert names == {"Renamed ad"}


def test_every_change_to_the_data_moves_its_generation():
    data = EmulatorData()
    ad = data.ads("act_1001")[0]
    form_id = data.lead_forms()[0]["id"]
    changes = [
        lambda: data.touch(ad["id"], WHEN),
        lambda: data.set_status(ad["id"], "PAUSED", WHEN),
        lambda: data.break_object(ad["id"]),
        lambda: data.add_lead(
            form_id, created_time=WHEN, email="a@example.com", full_name="A B", phone="+1"
        ),
        lambda: data.add_message(None, psid="123", text="hi", created_time=WHEN),
    ]
    for change in changes:
        generation = data.generation
        change()
        assert data.generation > generation
    generation = data.generation
    data.ads("act_1001"), data.insights("act_1001", SINCE, UNTIL), data.find_object(ad["id"])
    assert data.generation == generation  # reads change nothing


def test_the_row_cache_drops_the_least_recently_used_query():
    cache = RowCache(size=2)
    cache.put(("a",), [{"n": 1}])
    cache.put(("b",), [{"n": 2}])
    assert cache.get(("a",)) == [{"n": 1}]  # now the most recently used
    cache.put(("c",), [{"n": 3}])
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None and len(cache) == 2
    with pytest.raises(ValueError):
        RowCache(size=0)


def test_prepare_insights_computes_the_rows_ahead_without_changing_them():
    data = EmulatorData(accounts=3)
    assert data.prepare_insights("act_1003", SINCE, UNTIL) == 12 * 7
    assert data.insights("act_1003", SINCE, UNTIL) == EmulatorData(accounts=3).insights(
        "act_1003", SINCE, UNTIL
    )
    with pytest.raises(KeyError):
        data.prepare_insights("act_1004", SINCE, UNTIL)
