"""Objects Meta refuses to return: quarantined one by one, never sinking their edge.

The real SDK against the emulator over HTTP: `break_object` makes Meta's "(#100) The ad
creative is incomplete and cannot be returned" (subcode 2446289) fail every page of
`act_<id>/ads` that holds the ad, and the ad's own `GET /<id>`.
"""

from __future__ import annotations

import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded
from crm_pipeline.facebook.fields import object_filters
from crm_pipeline.facebook.object_reads import is_refusal, read_objects

ACCOUNT = "act_1001"


def _client(server: GraphEmulator, token: str) -> GraphClient:
    return GraphClient(server.url, token, timeout=10)


def _single_reads(server: GraphEmulator) -> list[str]:
    """Ids read alone (`GET /<version>/<id>`), in order."""
    parts = [r.path.strip("/").split("/") for r in server.requests]
    return [p[1] for p in parts if len(p) == 2 and p[1].isdigit()]


def _edge_reads(server: GraphEmulator) -> list[dict]:
    return [r.params for r in server.requests if r.path.endswith(f"/{ACCOUNT}/ads")]


@pytest.fixture
def data() -> EmulatorData:
    return EmulatorData(seed=7)


def test_a_refused_ad_is_quarantined_and_every_other_ad_is_read(data, token):
    ads = [ad["id"] for ad in data.ads(ACCOUNT)]
    broken = ads[5]
    data.break_object(broken)
    with GraphEmulator(data, expected_token=token) as server:
        batch = read_objects(_client(server, token), "ads", ACCOUNT, None)
        singles, edges = _single_reads(server), _edge_reads(server)

    assert sorted(o["id"] for o in batch.objects) == sorted(a for a in ads if a != broken)
    [refused] = batch.refused
    assert refused["record"] == {"id": broken, "account_id": "1001", "kind": "ads"}
    assert "subcode=2446289" in refused["reason"]
    assert "creative is incomplete" in refused["reason"]
    # One refused page, one read of the ids with the same filters, then each ad once.
    assert [e["fields"] for e in edges] == [edges[0]["fields"], "id"]
    assert edges[1]["filtering"] == edges[0]["filtering"]
    assert sorted(singles) == sorted(ads)
    assert all(o.get("effective_status") for o in batch.objects)


def test_objects_of_pages_read_before_the_refusal_are_not_read_again(data, token):
    ads = [ad["id"] for ad in data.ads(ACCOUNT)]
    with GraphEmulator(data, expected_token=token) as server:
        every = {"filtering": object_filters()}
        client = _client(server, token)
        order = [o["id"] for o in client.iter_objects("ads", ACCOUNT, limit=5, params=every)]
    assert sorted(order) == sorted(ads)
    data.break_object(order[7])  # on the second page of five
    with GraphEmulator(data, expected_token=token) as server:
        batch = read_objects(_client(server, token), "ads", ACCOUNT, None, limit=5)
        singles = _single_reads(server)
    assert singles == order[5:]  # the first page's five were kept, never read again
    assert [o["id"] for o in batch.objects] == order[:7] + order[8:]
    assert [r["record"]["id"] for r in batch.refused] == [order[7]]


def test_an_edge_without_refusals_costs_no_extra_call(data, token):
    with GraphEmulator(data, expected_token=token) as server:
        client = _client(server, token)
        batch = read_objects(client, "ads", ACCOUNT, None, limit=5)
        assert client.calls == 3  # 12 ads, pages of 5
        assert not _single_reads(server)
    assert len(batch.objects) == 12 and not batch.refused


def test_a_token_error_fails_the_read_and_is_never_quarantined(data, token):
    data.break_object(data.ads(ACCOUNT)[0]["id"])
    faults = FaultPlan()
    faults.add(Fault(kind="invalid_token", path="/ads"))
    with GraphEmulator(data, expected_token=token, faults=faults) as server:
        with pytest.raises(GraphApiError) as info:
            read_objects(_client(server, token), "ads", ACCOUNT, None)
        assert not _single_reads(server)
    assert info.value.code == 190
    assert token not in str(info.value)


def test_a_permission_error_while_reading_alone_fails_the_read(data, token):
    ads = [ad["id"] for ad in data.ads(ACCOUNT)]
    data.break_object(ads[0])
    faults = FaultPlan()
    faults.add(Fault(kind="permission", path=f"/{ads[3]}"))  # only that ad's own read
    with (
        GraphEmulator(data, expected_token=token, faults=faults) as server,
        pytest.raises(GraphApiError) as info,
    ):
        read_objects(_client(server, token), "ads", ACCOUNT, None)
    assert info.value.code == 200


@pytest.mark.parametrize(
    ("error", "refusal"),
    [
        (GraphApiError("x", code=100, subcode=2446289, http_status=400), True),
        (GraphApiError("x", code=100, subcode=33, http_status=400), True),
        (GraphApiError("x", code=190, http_status=400), False),
        (GraphApiError("x", code=200, http_status=403), False),
        (GraphApiError("x", code=10, http_status=400), False),
        (GraphApiError("x", code=17, http_status=400), False),
        (GraphApiError("x", code=80004, http_status=400), False),
        (GraphApiError("x", code=1, http_status=400), False),
        (GraphApiError("x", code=100, http_status=500), False),
        (GraphApiError("x", code=100, http_status=400, is_transient=True), False),
        (GraphApiError("connection reset", is_transient=True), False),
        (
            RateLimitBudgetExceeded(
                "x", requested_seconds=9, waited_seconds=1, max_wait_seconds=5, http_status=400
            ),
            False,
        ),
    ],
)
def test_only_a_refusal_of_the_object_is_a_refusal(error, refusal):
    assert is_refusal(error) is refusal
