"""What the token can see, as Meta answers it: ``me``, ``me/adaccounts``, ``me/accounts`` and
the ad account node. This is how anything outside the emulator learns its accounts and Page."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from graph_emulator import EmulatorData

ACCOUNT_FIELDS = "id,account_id,name,currency,timezone_name,account_status"


def url(emu, token, path: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{path}?{urlencode({'access_token': token, **params})}"


def test_ad_accounts_with_every_field(emulator, token, http_get):
    status, body, raw, _ = http_get(url(emulator, token, "me/adaccounts", fields=ACCOUNT_FIELDS))
    assert status == 200
    assert [a["id"] for a in body["data"]] == ["act_1001", "act_1002"]
    first = body["data"][0]
    assert list(first) == ACCOUNT_FIELDS.split(",")
    assert first["account_id"] == "1001"  # bare digits, a string
    assert first["account_status"] == 1  # Meta's integer code: active
    assert '"account_status":1' in raw
    assert first["currency"] == "USD" and first["timezone_name"] == "America/New_York"
    assert isinstance(first["name"], str) and first["name"]
    assert body["data"] == EmulatorData(seed=7).ad_accounts()
    assert set(body["paging"]["cursors"]) == {"before", "after"}
    assert "next" not in body["paging"]


def test_ad_accounts_default_to_their_ids(emulator, token, http_get):
    _, body, _, _ = http_get(url(emulator, token, "me/adaccounts"))
    assert body["data"] == [
        {"id": "act_1001", "account_id": "1001"},
        {"id": "act_1002", "account_id": "1002"},
    ]


def test_ad_accounts_page_like_every_edge(emulator, token, http_get):
    status, first, _, _ = http_get(url(emulator, token, "me/adaccounts", fields="name", limit="1"))
    assert status == 200 and [a["id"] for a in first["data"]] == ["act_1001"]
    assert first["paging"]["next"].startswith(f"{emulator.url}/v26.0/me/adaccounts?")
    _, second, _, _ = http_get(first["paging"]["next"])
    assert [a["id"] for a in second["data"]] == ["act_1002"]
    assert "next" not in second["paging"] and "previous" in second["paging"]


def test_pages_the_token_manages(emulator, token, http_get):
    _, body, _, _ = http_get(url(emulator, token, "me/accounts", fields="id,name"))
    assert body["data"] == [{"id": "2001", "name": "Northwind Outdoor"}]
    _, full, _, _ = http_get(url(emulator, token, "me/accounts"))
    (page,) = full["data"]
    assert set(page) == {"id", "name", "category", "tasks"} and "MESSAGING" in page["tasks"]
    assert "access_token" not in page  # the emulator never hands out Page tokens


def test_me_is_the_system_user(emulator, token, http_get):
    status, body, _, _ = http_get(url(emulator, token, "me"))
    assert status == 200 and set(body) == {"id", "name"}


def test_the_ad_account_node(emulator, token, http_get):
    status, body, _, _ = http_get(url(emulator, token, "act_1002", fields=ACCOUNT_FIELDS))
    assert status == 200
    assert body == EmulatorData(seed=7).ad_account("act_1002")
    _, default, _, _ = http_get(url(emulator, token, "act_1002"))
    assert default == {"id": "act_1002", "account_id": "1002"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("me/adaccounts", {"fields": "id,balance"}),
        ("me/accounts", {"fields": "id,fan_count"}),
        ("me", {"fields": "email"}),
        ("act_1001", {"fields": "spend_cap"}),
        ("me/friends", {}),
    ],
)
def test_unknown_fields_and_edges_are_code_100(emulator, token, http_get, path, params):
    status, body, _, _ = http_get(url(emulator, token, path, **params))
    assert status == 400 and body["error"]["code"] == 100, body


def test_unknown_account_node_and_writes_are_refused(emulator, token, http_get):
    status, body, _, _ = http_get(url(emulator, token, "act_999", fields="name"))
    assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    status, body, _ = emulator.handle(
        "POST", "/v26.0/me/adaccounts", f"access_token={token}".encode()
    )
    assert (status, body["error"]["code"]) == (400, 100)


def test_me_needs_a_token_and_reports_app_usage_only(emulator, http_get):
    status, body, _, headers = http_get(f"{emulator.url}/v26.0/me/adaccounts")
    assert (status, body["error"]["code"]) == (400, 2500)
    assert json.loads(headers["X-App-Usage"])["call_count"] >= 1
    assert headers.get("X-Ad-Account-Usage") is None
