"""Insights in the emulator as Meta answers them in 2026: purchase values, levels, breakdowns,
action breakdowns, attribution windows and the reach throttle header, over real HTTP."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import FacebookAdsApi, FacebookSession

TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-08"})  # 12 ads x 7 days
WINDOWS = ["1d_click", "7d_click", "28d_click", "1d_view", "1d_ev"]
METRICS = "impressions,clicks,spend,reach,frequency,actions,action_values,conversions"
LISTS = ("actions", "action_values", "conversions")
IDS = {
    "account": ["account_id"],
    "campaign": ["account_id", "campaign_id"],
    "adset": ["account_id", "campaign_id", "adset_id"],
    "ad": ["account_id", "campaign_id", "adset_id", "ad_id"],
}
VALUES = {
    "age": {"13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"},
    "gender": {"female", "male", "unknown"},
    "publisher_platform": {"facebook", "instagram", "audience_network", "messenger"},
    "device_platform": {"mobile_app", "mobile_web", "desktop"},
}


def url(emu, token, account: str = "act_1001", **params: str) -> str:
    query = {"access_token": token, "time_increment": "1", "time_range": TIME_RANGE, **params}
    query.setdefault("limit", "500")
    return f"{emu.url}/v26.0/{account}/insights?{urlencode(query)}"


def rows_of(http_get, first: str) -> list[dict]:
    rows, next_url = [], first
    while next_url:
        status, body, _, _ = http_get(next_url)
        assert status == 200, body
        rows += body["data"]
        next_url = body.get("paging", {}).get("next")
    return rows


def level_rows(emu, token, http_get, level: str, windows=True, **params: str) -> list[dict]:
    fields = ",".join([*IDS[level], *METRICS.split(",")])
    if windows:
        params["action_attribution_windows"] = json.dumps(WINDOWS)
    return rows_of(http_get, url(emu, token, level=level, fields=fields, **params))


def cents(text: str) -> int:
    return int(Decimal(text) * 100)


def totals(rows: list[dict], key_fields: list[str]) -> dict[tuple, Counter]:
    """Every number of ``rows`` summed per key and day: counts, spend in cents, and each
    action list's amounts per action type and per amount name (value and each window)."""
    out: dict[tuple, Counter] = {}
    for row in rows:
        total = out.setdefault((*(row[f] for f in key_fields), row["date_start"]), Counter())
        for name in ("impressions", "clicks", "reach"):
            total[name] += int(row[name])
        total["spend"] += cents(row["spend"])
        for kind in LISTS:
            for entry in row.get(kind, []):
                for name, amount in entry.items():
                    if name not in ("action_type", "action_device"):
                        number = cents(amount) if kind == "action_values" else int(amount)
                        total[(kind, entry["action_type"], name)] += number
    return out


def assert_frequency(row: dict) -> None:
    assert re.fullmatch(r"\d+(\.\d{1,6})?", row["frequency"]), row
    expected = int(row["impressions"]) / int(row["reach"]) if int(row["reach"]) else 0
    assert abs(float(row["frequency"]) - expected) <= 5.01e-7, row


# -- A: the insight values -------------------------------------------------------------------------


def test_purchase_days_carry_actions_values_and_conversions(emulator, token, http_get):
    month = json.dumps({"since": "2026-03-01", "until": "2026-03-31"})
    rows = rows_of(
        http_get,
        url(emulator, token, level="ad", time_range=month, fields="ad_id,clicks," + METRICS),
    )
    assert len(rows) == 12 * 31
    buying = [row for row in rows if "conversions" in row]
    assert 0.05 * len(rows) < len(buying) < 0.5 * len(rows), "purchases on some days only"
    for row in rows:
        assert_frequency(row)
        actions = {a["action_type"]: a["value"] for a in row.get("actions", [])}
        if int(row["clicks"]):
            assert actions["link_click"] == row["clicks"]
        if "conversions" not in row:
            assert "action_values" not in row and "purchase" not in actions
            continue
        (conversion,) = row["conversions"]
        count = conversion["value"]
        assert conversion["action_type"] == "purchase" and count in ("1", "2", "3")
        assert actions["purchase"] == actions["offsite_conversion.fb_pixel_purchase"] == count
        values = {a["action_type"]: a["value"] for a in row["action_values"]}
        assert set(values) == {"purchase", "offsite_conversion.fb_pixel_purchase"}
        assert len(set(values.values())) == 1
        assert re.fullmatch(r"\d+\.\d\d", values["purchase"])
        assert 15 * int(count) <= float(values["purchase"]) <= 150 * int(count)


# -- B: levels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["account", "campaign", "adset"])
def test_levels_sum_the_ad_rows_exactly(emulator, token, http_get, level):
    ads = level_rows(emulator, token, http_get, "ad")
    rows = level_rows(emulator, token, http_get, level)
    assert totals(rows, IDS[level]) == totals(ads, IDS[level])
    assert len(rows) == len(totals(rows, IDS[level])), "one row per object and day"
    assert len(rows) < len(ads)
    for row in rows:
        numbers = {"impressions", "clicks", "spend", "reach", "frequency"}
        assert set(row) - set(LISTS) == {*IDS[level], *numbers, "date_start", "date_stop"}
        assert_frequency(row)
    keys = [(row["date_start"], *(row[f] for f in IDS[level])) for row in rows]
    assert keys == sorted(keys)


def test_default_level_is_the_account(emulator, token, http_get):
    rows = rows_of(http_get, url(emulator, token, fields="account_id,impressions"))
    assert [row["account_id"] for row in rows] == ["1001"] * 7
    assert set(rows[0]) == {"account_id", "impressions", "date_start", "date_stop"}


def test_an_id_finer_than_the_level_is_refused(emulator, token, http_get):
    status, body, _, _ = http_get(
        url(emulator, token, level="campaign", fields="campaign_id,ad_id")
    )
    assert (status, body["error"]["code"]) == (400, 100)
    assert "ad_id" in body["error"]["message"]


# -- B: breakdowns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "breakdowns",
    [
        "age",
        "gender",
        "age,gender",
        json.dumps(["age", "gender"]),
        "country",
        "region",
        "country,region",
        "publisher_platform",
        "publisher_platform,platform_position",
        "device_platform",
        "impression_device",
    ],
)
def test_breakdown_rows_sum_to_the_unbroken_rows(emulator, token, http_get, breakdowns):
    names = breakdowns.strip("[]").replace('"', "").replace(" ", "").split(",")
    ads = level_rows(emulator, token, http_get, "ad")
    split = level_rows(emulator, token, http_get, "ad", breakdowns=breakdowns)
    assert totals(split, IDS["ad"]) == totals(ads, IDS["ad"])
    per_ad_day = Counter((row["ad_id"], row["date_start"]) for row in split)
    assert len(per_ad_day) == 84 and max(per_ad_day.values()) > 1
    for row in split:
        for name in names:
            assert isinstance(row[name], str)
            assert row[name] in VALUES.get(name, {row[name]})
    keys = [(row["date_start"], row["ad_id"]) for row in split]
    assert keys == sorted(keys), "rows ordered by date, then ids, then breakdown values"


def test_breakdowns_at_a_level_sum_to_that_level(emulator, token, http_get):
    campaigns = level_rows(emulator, token, http_get, "campaign")
    by_age = level_rows(emulator, token, http_get, "campaign", breakdowns="age")
    assert totals(by_age, IDS["campaign"]) == totals(campaigns, IDS["campaign"])
    assert {row["age"] for row in by_age} <= VALUES["age"]


def test_windows_split_by_breakdowns_stay_ordered(emulator, token, http_get):
    split = level_rows(emulator, token, http_get, "ad", breakdowns="age,gender")
    entries = [e for row in split for kind in LISTS for e in row.get(kind, [])]
    assert entries
    for entry in entries:
        c1, c7, c28 = (Decimal(entry[w]) for w in ("1d_click", "7d_click", "28d_click"))
        assert c1 <= c7 <= c28, entry
        assert Decimal(entry["value"]) == c7 + Decimal(entry["1d_view"]), entry


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"breakdowns": "bogus"}, "breakdowns[0] must be one of the following values"),
        ({"breakdowns": "age,region"}, "Current combination of data breakdown columns"),
        ({"breakdowns": "dma,gender"}, "Current combination of data breakdown columns"),
        ({"breakdowns": "platform_position"}, "Current combination of data breakdown columns"),
        (
            {"breakdowns": "hourly_stats_aggregated_by_advertiser_time_zone"},
            "not supported by the emulator",
        ),
        ({"breakdowns": "age", "fields": "impressions,app_store_clicks"}, "app_store_clicks"),
        ({"breakdowns": "age", "fields": "impressions,relevance_score"}, "relevance_score"),
        ({"action_breakdowns": "action_bogus"}, "action_breakdowns[0] must be one of"),
        ({"action_breakdowns": "action_destination"}, "not supported by the emulator"),
    ],
)
def test_refused_breakdowns_are_code_100(emulator, token, http_get, params, message):
    status, body, _, _ = http_get(url(emulator, token, level="ad", **params))
    assert (status, body["error"]["code"], body["error"]["type"]) == (400, 100, "OAuthException")
    assert body["error"]["message"].startswith("(#100) ")
    assert message in body["error"]["message"]


def test_action_device_splits_each_action_exactly(emulator, token, http_get):
    fields = "ad_id,actions,action_values,conversions"
    plain = rows_of(http_get, url(emulator, token, level="ad", fields=fields))
    split = rows_of(
        http_get, url(emulator, token, level="ad", fields=fields, action_breakdowns="action_device")
    )
    assert totals_of_values(split) == totals_of_values(plain)
    devices = Counter(e["action_device"] for row in split for e in row.get("actions", []))
    assert len(devices) > 2
    assert set(devices) <= {
        "iphone",
        "android_smartphone",
        "desktop",
        "ipad",
        "android_tablet",
        "other",
    }


def totals_of_values(rows: list[dict]) -> Counter:
    out: Counter = Counter()
    for row in rows:
        for kind in LISTS:
            for entry in row.get(kind, []):
                amount = entry["value"]
                number = cents(amount) if kind == "action_values" else int(amount)
                out[(row["ad_id"], row["date_start"], kind, entry["action_type"])] += number
    return out


# -- C: attribution windows ------------------------------------------------------------------------


def test_windows_add_a_key_per_window_and_keep_the_default_value(emulator, token, http_get):
    plain = level_rows(emulator, token, http_get, "ad", windows=False)
    attributed = level_rows(emulator, token, http_get, "ad")
    assert [{k: v for k, v in r.items() if k not in LISTS} for r in attributed] == [
        {k: v for k, v in r.items() if k not in LISTS} for r in plain
    ]
    differs = 0
    for before, after in zip(plain, attributed, strict=True):
        for kind in LISTS:
            assert [e["value"] for e in before.get(kind, [])] == [
                e["value"] for e in after.get(kind, [])
            ]
            for entry in after.get(kind, []):
                assert list(entry) == ["action_type", "value", *WINDOWS]
                c1, c7, c28 = (Decimal(entry[w]) for w in ("1d_click", "7d_click", "28d_click"))
                assert c1 <= c7 <= c28
                assert Decimal(entry["value"]) == c7 + Decimal(entry["1d_view"])
                differs += c1 != c7 or c7 != c28
    assert differs, "the windows are not all the same number"
    again = level_rows(emulator, token, http_get, "ad")
    assert again == attributed  # deterministic


@pytest.mark.parametrize("window", ["7d_view", "28d_view"])
def test_removed_view_windows_are_refused(emulator, token, http_get, window):
    windows = json.dumps(["1d_click", window])
    status, body, _, _ = http_get(
        url(emulator, token, level="ad", action_attribution_windows=windows)
    )
    assert (status, body["error"]["code"]) == (400, 100)
    assert body["error"]["message"] == (
        f"(#100) action_attribution_windows value {window} is no longer supported: Meta "
        "stopped returning 7d_view and 28d_view on 2026-01-12"
    )


# -- through the SDK and async report runs ---------------------------------------------------------


def test_the_sdk_asks_for_breakdowns_and_windows(emulator, token, http_get):
    session = FacebookSession(None, None, token)
    session.GRAPH = emulator.url
    session.requests.trust_env = False
    account = AdAccount("act_1001", api=FacebookAdsApi(session, "v26.0"))
    params = {
        "level": "adset",
        "time_increment": 1,
        "time_range": json.loads(TIME_RANGE),
        "breakdowns": ["publisher_platform", "platform_position"],
        "action_attribution_windows": WINDOWS,
        "limit": 200,
    }
    fields = [*IDS["adset"], *METRICS.split(",")]
    rows = [row.export_all_data() for row in account.get_insights(fields=fields, params=params)]
    (request, *_) = [r for r in emulator.requests if r.path.endswith("/insights")]
    assert json.loads(request.params["breakdowns"]) == params["breakdowns"]
    assert totals(rows, IDS["adset"]) == totals(
        level_rows(emulator, token, http_get, "adset"), IDS["adset"]
    )


# -- G: the reach throttle header ------------------------------------------------------------------


def test_reach_with_breakdowns_reports_the_reach_throttle(emulator, token, http_get):
    def header(**params: str):
        _, _, _, headers = http_get(url(emulator, token, level="ad", limit="50", **params))
        assert "x-fb-ads-insights-throttle" in headers
        value = headers.get("x-fb-ads-insights-reach-throttle")
        return None if value is None else json.loads(value)

    assert header(fields="reach") is None
    assert header(fields="impressions", breakdowns="age") is None
    first = header(fields="reach", breakdowns="age")
    assert first["acc_id_util_pct"] == 10 and 0 < first["reset_time_duration"] <= 86400
    assert header(fields="frequency", breakdowns="gender")["acc_id_util_pct"] == 20
    _, body, _, _ = http_get(
        url(emulator, token, level="ad", limit="50", fields="reach", breakdowns="age")
    )
    assert (
        header(fields="reach", breakdowns="age", after=body["paging"]["cursors"]["after"])[
            "acc_id_util_pct"
        ]
        == 30
    ), "a cursor page continues its query"
    _, _, _, other = http_get(
        url(emulator, token, "act_1002", level="ad", fields="reach", breakdowns="age")
    )
    assert json.loads(other["x-fb-ads-insights-reach-throttle"])["acc_id_util_pct"] == 10


def test_an_async_report_of_reach_by_breakdown_reports_the_reach_throttle(emulator, token):
    form = {
        "access_token": token,
        "level": "ad",
        "time_increment": "1",
        "time_range": TIME_RANGE,
        "fields": "ad_id,reach",
        "breakdowns": json.dumps(["country"]),
    }
    request = urllib.request.Request(
        f"{emulator.url}/v26.0/act_1001/insights", data=urlencode(form).encode(), method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert "report_run_id" in json.loads(response.read())
        throttle = json.loads(response.headers["x-fb-ads-insights-reach-throttle"])
    assert throttle["acc_id_util_pct"] == 10


@pytest.mark.parametrize(("level", "breakdowns"), [("ad", ""), ("campaign", "age")])
def test_ratios_are_derived_from_each_row(emulator, token, http_get, level, breakdowns):
    fields = "impressions,clicks,spend,reach,actions,ctr,cpc,cpm,cpp,inline_link_clicks"
    rows = rows_of(
        http_get, url(emulator, token, level=level, fields=fields, breakdowns=breakdowns)
    )
    assert rows
    for row in rows:
        impressions, clicks, reach = (int(row[n]) for n in ("impressions", "clicks", "reach"))
        spend = float(row["spend"])
        links = [a["value"] for a in row.get("actions", []) if a["action_type"] == "link_click"]
        assert row["inline_link_clicks"] == (links[0] if links else "0")
        expected = {
            "ctr": clicks * 100 / impressions if impressions else None,
            "cpc": spend / clicks if clicks else None,
            "cpm": spend * 1000 / impressions if impressions else None,
            "cpp": spend * 1000 / reach if reach else None,
        }
        for name, value in expected.items():
            if value is None:
                assert name not in row
            else:
                assert abs(float(row[name]) - value) <= 5.01e-7, (name, row)


def test_name_fields_describe_each_row_down_to_its_level(emulator, token, http_get):
    fields = "campaign_id,campaign_name,objective,account_name,account_currency,impressions"
    rows = rows_of(
        http_get,
        url(
            emulator,
            token,
            level="campaign",
            fields=fields,
            breakdowns="publisher_platform,platform_position",
        ),
    )
    campaigns = {c["id"]: c for c in emulator.data.campaigns("act_1001")}
    account = emulator.data.ad_account("act_1001")
    assert {row["campaign_id"] for row in rows} == set(campaigns)
    for row in rows:
        campaign = campaigns[row["campaign_id"]]
        assert (row["campaign_name"], row["objective"]) == (campaign["name"], campaign["objective"])
        assert (row["account_name"], row["account_currency"]) == (account["name"], "USD")
    status, body, _, _ = http_get(url(emulator, token, level="campaign", fields="ad_name"))
    assert (status, body["error"]["code"]) == (400, 100)
