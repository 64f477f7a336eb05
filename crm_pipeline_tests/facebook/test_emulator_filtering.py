"""`filtering` in the emulator: insights by campaign/ad set/ad, objects by updated_time."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import pytest
from graph_emulator import EmulatorData

TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-03"})


def insights(emu, token, filtering) -> str:
    query = {
        "access_token": token,
        "level": "ad",
        "time_increment": "1",
        "time_range": TIME_RANGE,
        "fields": "campaign_id,adset_id,ad_id",
        "limit": "500",
        "filtering": json.dumps(filtering),
    }
    return f"{emu.url}/v26.0/act_1001/insights?{urlencode(query)}"


def objects(emu, token, edge: str, filtering=None, account: str = "act_1001") -> str:
    query = {"access_token": token, "fields": "id,name,updated_time", "limit": "500"}
    if filtering is not None:
        query["filtering"] = json.dumps(filtering)
    return f"{emu.url}/v26.0/{account}/{edge}?{urlencode(query)}"


def unix(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp())


@pytest.mark.parametrize("level", ["campaign", "adset", "ad"])
def test_insights_filter_by_id_in(emulator, token, http_get, level):
    data = EmulatorData()
    pool = {"campaign": data.campaigns, "adset": data.adsets, "ad": data.ads}[level]("act_1001")
    wanted = [pool[0]["id"], pool[-1]["id"]]
    filtering = [{"field": f"{level}.id", "operator": "IN", "value": wanted}]
    status, body, _, _ = http_get(insights(emulator, token, filtering))
    assert status == 200, body
    rows = body["data"]
    assert rows and {row[f"{level}_id"] for row in rows} == set(wanted)
    everything = data.insights("act_1001", date(2026, 2, 2), date(2026, 2, 3))
    assert len(rows) == sum(row[f"{level}_id"] in wanted for row in everything)


def test_insights_filter_equal_and_combined(emulator, token, http_get):
    ad = emulator.data.ads("act_1001")[4]
    filtering = [
        {"field": "campaign.id", "operator": "IN", "value": [ad["campaign_id"]]},
        {"field": "ad.id", "operator": "EQUAL", "value": ad["id"]},
    ]
    _, body, _, _ = http_get(insights(emulator, token, filtering))
    assert [(r["ad_id"], r["date_start"]) for r in body["data"]] == [
        (ad["id"], "2026-02-02"),
        (ad["id"], "2026-02-03"),
    ]


@pytest.mark.parametrize(
    "filtering",
    [
        [{"field": "campaign.name", "operator": "IN", "value": ["x"]}],
        [{"field": "ad.id", "operator": "GREATER_THAN", "value": "1"}],
        [{"field": "ad.id", "operator": "EQUAL", "value": ["1", "2"]}],
        [{"field": "ad.id", "operator": "IN"}],
        {"field": "ad.id"},
    ],
)
def test_insights_bad_filters_are_code_100(emulator, token, http_get, filtering):
    status, body, _, _ = http_get(insights(emulator, token, filtering))
    assert (status, body["error"]["code"]) == (400, 100)


@pytest.mark.parametrize("edge", ["campaigns", "adsets", "ads"])
def test_objects_filter_by_updated_time(emulator, token, http_get, edge):
    _, body, _, _ = http_get(objects(emulator, token, edge))
    stamps = sorted(unix(o["updated_time"]) for o in body["data"])
    cut = stamps[(len(stamps) - 1) // 2]
    after = [{"field": "updated_time", "operator": "GREATER_THAN", "value": cut}]
    _, newer, _, _ = http_get(objects(emulator, token, edge, after))
    assert newer["data"], "the cut leaves some objects"
    assert all(unix(o["updated_time"]) > cut for o in newer["data"])
    assert len(newer["data"]) == sum(s > cut for s in stamps)
    # The value may also arrive as a string, as some clients send it.
    as_text = [{**after[0], "value": str(cut)}]
    assert http_get(objects(emulator, token, edge, as_text))[1]["data"] == newer["data"]


def test_touch_makes_an_object_show_up_incrementally(emulator, token, http_get):
    _, body, _, _ = http_get(objects(emulator, token, "ads"))
    everything = body["data"] + emulator.data.ads("act_1002")
    watermark = max(unix(o["updated_time"]) for o in everything)
    after = [{"field": "updated_time", "operator": "GREATER_THAN", "value": watermark}]
    assert http_get(objects(emulator, token, "ads", after))[1]["data"] == []

    ad_id = body["data"][3]["id"]
    edited = emulator.data.touch(ad_id, datetime(2026, 6, 1, 12, tzinfo=UTC), name="Renamed ad")
    assert edited["updated_time"] == "2026-06-01T12:00:00+0000"
    _, newer, _, _ = http_get(objects(emulator, token, "ads", after))
    assert newer["data"] == [
        {"id": ad_id, "name": "Renamed ad", "updated_time": "2026-06-01T12:00:00+0000"}
    ]
    # Other accounts are untouched.
    assert http_get(objects(emulator, token, "ads", after, account="act_1002"))[1]["data"] == []


def test_touch_unknown_id_raises():
    with pytest.raises(KeyError):
        EmulatorData().touch("999", datetime(2026, 6, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "filtering",
    [
        [{"field": "name", "operator": "CONTAIN", "value": "Sale"}],
        [{"field": "updated_time", "operator": "LESS_THAN", "value": 1}],
        [{"field": "updated_time", "operator": "GREATER_THAN", "value": "yesterday"}],
    ],
)
def test_objects_bad_filters_are_code_100(emulator, token, http_get, filtering):
    status, body, _, _ = http_get(objects(emulator, token, "campaigns", filtering))
    assert (status, body["error"]["code"]) == (400, 100)
