"""Deleted, archived and refused objects in the emulator, as Meta serves them, over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from graph_emulator import EmulatorData

WHEN = datetime(2026, 7, 1, 8, 30, tzinfo=UTC)
STAMP = "2026-07-01T08:30:00+0000"
ALL_STATUSES = ["ACTIVE", "PAUSED", "CAMPAIGN_PAUSED", "ADSET_PAUSED", "DELETED", "ARCHIVED"]
TIME_RANGE = json.dumps({"since": "2026-02-02", "until": "2026-02-04"})


def edge(emu, token, edge_name: str, fields: str = "id,name,effective_status", **params) -> str:
    query = {"access_token": token, "fields": fields, "limit": "500", **params}
    return f"{emu.url}/v26.0/act_1001/{edge_name}?{urlencode(query)}"


def node(emu, token, object_id: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{object_id}?{urlencode({'access_token': token, **params})}"


def status_filter(*statuses: str, field: str = "effective_status") -> str:
    return json.dumps([{"field": field, "operator": "IN", "value": list(statuses)}])


def ids(http_get, url: str) -> list[str]:
    status, body, _, _ = http_get(url)
    assert status == 200, body
    return [item["id"] for item in body["data"]]


# -- D: deleted and archived objects ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["DELETED", "ARCHIVED"])
def test_a_deleted_or_archived_ad_is_hidden_unless_asked_for(emulator, token, http_get, status):
    ad_id = emulator.data.ads("act_1001")[5]["id"]
    assert ad_id in ids(http_get, edge(emulator, token, "ads"))
    edited = emulator.data.set_status(ad_id, status, WHEN)
    assert (edited["status"], edited["effective_status"], edited["updated_time"]) == (
        status,
        status,
        STAMP,
    )

    visible = ids(http_get, edge(emulator, token, "ads"))
    assert ad_id not in visible and len(visible) == 11
    asked = ids(http_get, edge(emulator, token, "ads", filtering=status_filter(status)))
    assert asked == [ad_id]
    everything = ids(http_get, edge(emulator, token, "ads", filtering=status_filter(*ALL_STATUSES)))
    assert sorted(everything) == sorted([*visible, ad_id])


def test_status_filter_combines_with_updated_time(emulator, token, http_get):
    ads = emulator.data.ads("act_1001")
    emulator.data.set_status(ads[0]["id"], "DELETED", WHEN)
    emulator.data.set_status(ads[1]["id"], "PAUSED", WHEN)
    after = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
    filtering = json.dumps(
        [
            {"field": "updated_time", "operator": "GREATER_THAN", "value": after},
            {"field": "effective_status", "operator": "IN", "value": ["DELETED", "PAUSED"]},
        ]
    )
    assert ids(http_get, edge(emulator, token, "ads", filtering=filtering)) == [
        ads[0]["id"],
        ads[1]["id"],
    ]


def test_deleting_a_campaign_hides_its_children_and_reactivating_restores_them(
    emulator, token, http_get
):
    data = emulator.data
    before = {o["id"]: o for o in data.adsets("act_1001") + data.ads("act_1001")}
    campaign = data.campaigns("act_1001")[0]
    data.set_status(campaign["id"], "DELETED", WHEN)
    children = [o for o in before.values() if o["campaign_id"] == campaign["id"]]
    assert children
    for child in data.adsets("act_1001") + data.ads("act_1001"):
        if child["campaign_id"] == campaign["id"]:
            assert (child["status"], child["effective_status"]) == (
                before[child["id"]]["status"],
                "DELETED",
            )
            assert child["updated_time"] == STAMP
    for edge_name in ("campaigns", "adsets", "ads"):
        shown = ids(http_get, edge(emulator, token, edge_name))
        assert campaign["id"] not in shown and not {c["id"] for c in children} & set(shown)

    data.set_status(campaign["id"], campaign["status"], datetime(2026, 7, 2, tzinfo=UTC))
    after = {o["id"]: o for o in data.adsets("act_1001") + data.ads("act_1001")}
    assert {i: o["effective_status"] for i, o in after.items()} == {
        i: o["effective_status"] for i, o in before.items()
    }


def test_set_status_refuses_unknown_ids_and_statuses():
    data = EmulatorData()
    with pytest.raises(KeyError):
        data.set_status("1", "DELETED", WHEN)
    with pytest.raises(ValueError):
        data.set_status(data.ads("act_1001")[0]["id"], "GONE", WHEN)


def test_an_unknown_status_in_a_filter_is_code_100(emulator, token, http_get):
    status, body, _, _ = http_get(edge(emulator, token, "ads", filtering=status_filter("GONE")))
    assert (status, body["error"]["code"]) == (400, 100)


# -- D: insights of deleted ads --------------------------------------------------------------------


def insight_ads(emu, token, http_get, filtering: str | None = None) -> set[str]:
    query = {
        "access_token": token,
        "level": "ad",
        "time_increment": "1",
        "time_range": TIME_RANGE,
        "fields": "ad_id,impressions",
        "limit": "500",
    }
    if filtering is not None:
        query["filtering"] = filtering
    status, body, _, _ = http_get(f"{emu.url}/v26.0/act_1001/insights?{urlencode(query)}")
    assert status == 200, body
    return {row["ad_id"] for row in body["data"]}


@pytest.mark.parametrize("level", ["ad", "adset", "campaign"])
def test_insights_of_a_deleted_ad_only_with_the_status_filter(emulator, token, http_get, level):
    ad = emulator.data.ads("act_1001")[2]
    assert ad["id"] in insight_ads(emulator, token, http_get)
    emulator.data.set_status(ad["id"], "DELETED", WHEN)
    assert ad["id"] not in insight_ads(emulator, token, http_get)
    assert len(insight_ads(emulator, token, http_get)) == 11

    field = f"{level}.effective_status"
    if level != "ad":
        emulator.data.set_status(ad[f"{level}_id"], "DELETED", WHEN)
    deleted_only = status_filter("DELETED", field=field)
    assert ad["id"] in insight_ads(emulator, token, http_get, deleted_only)
    with_all = status_filter(*ALL_STATUSES, field=field)
    assert ad["id"] in insight_ads(emulator, token, http_get, with_all)
    active_only = status_filter("ACTIVE", field=field)
    assert ad["id"] not in insight_ads(emulator, token, http_get, active_only)


# -- D: an ad Meta refuses to return ---------------------------------------------------------------


def test_a_broken_ad_fails_its_page_unless_only_ids_are_asked(emulator, token, http_get):
    ads = emulator.data.ads("act_1001")
    broken, other = ads[7]["id"], ads[1]["id"]
    emulator.data.break_object(broken)

    status, body, _, _ = http_get(edge(emulator, token, "ads", fields="id,name"))
    assert status == 400
    error = body["error"]
    assert (error["code"], error["error_subcode"]) == (100, 2446289)
    assert error["message"] == "(#100) The ad creative is incomplete and cannot be returned"
    assert broken in ids(http_get, edge(emulator, token, "ads", fields="id"))
    # A page without the ad is fine: the first 5 ads do not include the 8th.
    assert len(ids(http_get, edge(emulator, token, "ads", fields="id,name", limit="5"))) == 5

    assert http_get(node(emulator, token, broken, fields="id,name"))[1]["error"][
        "error_subcode"
    ] == (2446289)
    assert http_get(node(emulator, token, broken, fields="id"))[1] == {"id": broken}
    status, body, _, _ = http_get(node(emulator, token, other, fields="id,name,effective_status"))
    assert status == 200
    assert body == {k: ads[1][k] for k in ("id", "name", "effective_status")}


def test_campaign_and_ad_set_nodes_are_readable(emulator, token, http_get):
    campaign = emulator.data.campaigns("act_1002")[1]
    adset = emulator.data.adsets("act_1002")[0]
    _, body, _, _ = http_get(node(emulator, token, campaign["id"], fields="name,objective"))
    assert body == {k: campaign[k] for k in ("id", "name", "objective")}
    _, body, _, _ = http_get(node(emulator, token, adset["id"]))
    assert body == {"id": adset["id"]}  # Meta's default: the id
    status, body, _, _ = http_get(node(emulator, token, adset["id"], fields="bogus"))
    assert (status, body["error"]["code"]) == (400, 100)


def test_status_changes_leave_the_insight_numbers_alone():
    data, untouched = EmulatorData(), EmulatorData()
    for ad in data.ads("act_1001")[:3]:
        data.set_status(ad["id"], "ARCHIVED", WHEN)
    day = datetime(2026, 2, 2).date()
    assert data.insights("act_1001", day, day) == untouched.insights("act_1001", day, day)
