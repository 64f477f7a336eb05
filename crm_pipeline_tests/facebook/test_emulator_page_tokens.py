"""Page access tokens in the emulator: handed out as Meta hands them out, and required, as on
Meta, for Messenger reads (code 210 with the user's token)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from facebook_business.adobjects.page import Page
from facebook_business.api import FacebookAdsApi, FacebookSession
from graph_emulator import EmulatorData, GraphEmulator, page_token

PAGE = "2001"
CODE_210 = "(#210) A page access token is required to request this resource."


def get(emu, token: str, path: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{path}?{urlencode({'access_token': token, **params})}"


def ask_page_token(emu, token: str, http_get, fields: str = "access_token") -> str:
    status, body, _, _ = http_get(get(emu, token, PAGE, fields=fields))
    assert status == 200, body
    assert body["id"] == PAGE
    return body["access_token"]


def test_the_page_node_hands_out_a_page_token(emulator, token, http_get):
    status, body, raw, _ = http_get(get(emulator, token, PAGE, fields="access_token"))
    assert status == 200
    assert body == {"id": PAGE, "access_token": page_token(token, PAGE)}
    page = body["access_token"]
    assert page != token and page.startswith("EAAPAGE") and len(page) == 47
    _, named, _, _ = http_get(get(emulator, token, PAGE, fields="id,name,access_token"))
    assert named == {"id": PAGE, "name": emulator.data.page_name, "access_token": page}
    # The Page's entry of /me/accounts carries the same token, as on Meta.
    _, pages, _, _ = http_get(get(emulator, token, "me/accounts", fields="id,access_token"))
    assert pages["data"] == [{"id": PAGE, "access_token": page}]
    # Stable: asking again gives the same token (a pure function of user token and Page).
    assert ask_page_token(emulator, token, http_get) == page


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"{PAGE}/conversations", {"platform": "messenger"}),
        ("{conversation}/messages", {}),
    ],
)
def test_messenger_reads_need_the_page_token(emulator, token, http_get, path, params):
    path = path.format(conversation=emulator.data.conversations()[0]["id"])
    status, body, raw, _ = http_get(get(emulator, token, path, **params))
    assert (status, body["error"]["code"], body["error"]["type"]) == (400, 210, "OAuthException")
    assert body["error"]["message"] == CODE_210
    assert token not in raw

    page = ask_page_token(emulator, token, http_get)
    status, body, _, _ = http_get(get(emulator, page, path, **params))
    assert status == 200, body
    assert body["data"]


def test_lead_forms_and_leads_accept_either_token(emulator, token, http_get):
    page = ask_page_token(emulator, token, http_get)
    form_id = emulator.data.lead_forms()[0]["id"]
    for credential in (token, page):
        for path in (f"{PAGE}/leadgen_forms", f"{form_id}/leads", PAGE):
            status, body, _, _ = http_get(get(emulator, credential, path))
            assert status == 200, (path, body)


def test_the_page_token_is_no_ads_token_and_a_wrong_one_is_190(emulator, token, http_get):
    page = ask_page_token(emulator, token, http_get)
    status, body, raw, _ = http_get(get(emulator, page, "act_1001/campaigns"))
    assert (status, body["error"]["code"]) == (400, 200)
    assert page not in raw
    forged = page_token("EAAsomeone-else", PAGE)
    status, body, raw, _ = http_get(get(emulator, forged, f"{PAGE}/conversations"))
    assert (status, body["error"]["code"]) == (400, 190)
    assert forged not in raw


def test_tokens_are_never_recorded(emulator, token, http_get):
    page = ask_page_token(emulator, token, http_get)
    http_get(get(emulator, page, f"{PAGE}/conversations"))
    for request in emulator.requests:
        assert "access_token" not in request.params
        assert token not in repr(request) and page not in repr(request)


def test_without_the_requirement_a_user_token_reads_conversations(token, http_get):
    with GraphEmulator(EmulatorData(), expected_token=token, require_page_token=False) as emu:
        status, body, _, _ = http_get(get(emu, token, f"{PAGE}/conversations"))
    assert status == 200 and len(body["data"]) == 15


def test_the_sdk_reads_conversations_with_the_page_token(emulator, token, http_get):
    session = FacebookSession(None, None, ask_page_token(emulator, token, http_get))
    session.GRAPH = emulator.url
    session.requests.trust_env = False
    page = Page(PAGE, api=FacebookAdsApi(session, "v26.0"))
    conversations = list(page.get_conversations(fields=["id", "updated_time"], params={"limit": 5}))
    assert len(conversations) == 15
