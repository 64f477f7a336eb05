"""Page data in the emulator: lead forms and leads, conversations with nested messages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from facebook_business.adobjects.leadgenform import LeadgenForm
from facebook_business.adobjects.page import Page
from facebook_business.api import FacebookAdsApi, FacebookSession
from graph_emulator import EmulatorData, GraphEmulator

from crm_pipeline_tests.emulator_snapshots import all_leads, conversations_with_messages

GRAPH_TIME = re.compile(r"^2026-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")
LEAD_FIELDS = "id,created_time,ad_id,ad_name,campaign_id,form_id,field_data"
NESTED = "id,updated_time,participants,messages.limit(3){id,message,from,created_time}"


def get(emu, token, path: str, **params: str) -> str:
    return f"{emu.url}/v26.0/{path}?{urlencode({'access_token': token, **params})}"


def follow(http_get, url: str) -> list[dict]:
    rows = []
    while url:
        status, body, _, _ = http_get(url)
        assert status == 200, body
        rows += body["data"]
        url = body.get("paging", {}).get("next")
        assert len(rows) < 1000
    return rows


def unix(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp())


def since(text: str) -> str:
    return json.dumps([{"field": "time_created", "operator": "GREATER_THAN", "value": unix(text)}])


@pytest.fixture
def page_token(emulator, token, http_get) -> str:
    """The Page access token, asked of the emulator as of Meta: conversations need it."""
    return fetch_page_token(emulator, token, http_get)


def fetch_page_token(emu, token, http_get) -> str:
    status, body, _, _ = http_get(get(emu, token, "2001", fields="access_token"))
    assert status == 200, body
    return body["access_token"]


def sdk_page(emu, token) -> Page:
    session = FacebookSession(None, None, token)
    session.GRAPH = emu.url
    session.requests.trust_env = False
    return Page(emu.data.page_id, api=FacebookAdsApi(session, "v26.0"))


# -- lead forms and leads --------------------------------------------------------------------------


def test_lead_forms(emulator, token, http_get):
    fields = "id,name,status,created_time"
    status, body, _, _ = http_get(get(emulator, token, "2001/leadgen_forms", fields=fields))
    assert status == 200
    assert len(body["data"]) == 2
    for form in body["data"]:
        assert list(form) == ["id", "name", "status", "created_time"]
        assert form["id"].isdigit() and form["status"] == "ACTIVE"
        assert GRAPH_TIME.match(form["created_time"])
    assert "next" not in body["paging"]


def test_leads_wire_format_and_order(emulator, token, http_get):
    form_id = emulator.data.lead_forms()[0]["id"]
    leads = follow(
        http_get, get(emulator, token, f"{form_id}/leads", fields=LEAD_FIELDS, limit="7")
    )
    assert len(leads) == 30
    stamps = [lead["created_time"] for lead in leads]
    assert stamps == sorted(stamps, reverse=True), "newest first, like Meta"
    assert all("2026-09-01" <= s[:10] <= "2026-11-20" for s in stamps)
    ads = {
        ad["id"]: ad for account in emulator.data.account_ids for ad in emulator.data.ads(account)
    }
    for lead in leads:
        assert lead["form_id"] == form_id
        ad = ads[lead["ad_id"]]  # every seeded lead points at a real ad
        assert (lead["ad_name"], lead["campaign_id"]) == (ad["name"], ad["campaign_id"])
        names = [item["name"] for item in lead["field_data"]]
        assert names[:3] == ["email", "full_name", "phone_number"] and len(names) == 4
        assert all(isinstance(item["values"], list) for item in lead["field_data"])
        assert "@" in lead["field_data"][0]["values"][0]


def test_leads_filter_by_time_created(emulator, token, http_get):
    form_id = emulator.data.lead_forms()[1]["id"]
    all_leads = follow(http_get, get(emulator, token, f"{form_id}/leads", limit="100"))
    cut = all_leads[10]["created_time"]
    newer = follow(http_get, get(emulator, token, f"{form_id}/leads", filtering=since(cut)))
    assert [lead["id"] for lead in newer] == [lead["id"] for lead in all_leads[:10]]
    status, body, _, _ = http_get(
        get(
            emulator,
            token,
            f"{form_id}/leads",
            filtering=json.dumps(
                [{"field": "created_time", "operator": "GREATER_THAN", "value": 1}]
            ),
        )
    )
    assert (status, body["error"]["code"]) == (400, 100)


def test_add_lead_then_fetch_it_alone(emulator, token, http_get):
    form_id = emulator.data.lead_forms()[0]["id"]
    ad_id = emulator.data.ads("act_1002")[0]["id"]
    newest = emulator.data.leads(form_id)[0]["created_time"]
    lead = emulator.data.add_lead(
        form_id,
        created_time=datetime(2026, 11, 25, 8, 30, tzinfo=UTC),
        email="new@example.com",
        full_name="New Person",
        phone="+15550001",
        ad_id=ad_id,
    )
    newer = follow(http_get, get(emulator, token, f"{form_id}/leads", filtering=since(newest)))
    assert [row["id"] for row in newer] == [lead["id"]]
    assert newer[0]["created_time"] == "2026-11-25T08:30:00+0000"

    fields = "id,created_time,ad_id,form_id,field_data"
    status, single, _, _ = http_get(get(emulator, token, lead["id"], fields=fields))
    assert status == 200
    assert single["ad_id"] == ad_id and single["form_id"] == form_id
    assert {"name": "email", "values": ["new@example.com"]} in single["field_data"]

    organic = emulator.data.add_lead(
        form_id,
        created_time=datetime(2026, 11, 26, tzinfo=UTC),
        email="o@example.com",
        full_name="Organic",
        phone="+1",
    )
    _, body, _, _ = http_get(get(emulator, token, organic["id"], fields="id,ad_id,is_organic"))
    assert body == {"id": organic["id"], "is_organic": True}  # no ad: the field is omitted


def test_unknown_form_and_lead_are_graph_errors(emulator, token, http_get):
    for node in ("1460000000000999", "1460000000000999/leads"):
        status, body, _, _ = http_get(get(emulator, token, node))
        assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 100, 33)
    with pytest.raises(KeyError):
        emulator.data.add_lead(
            "nope", created_time=datetime(2026, 1, 1), email="", full_name="", phone=""
        )


def test_leads_through_the_sdk(emulator, token):
    page = sdk_page(emulator, token)
    forms = list(page.get_lead_gen_forms(fields=["id", "name", "status", "created_time"]))
    assert len(forms) == 2
    fields = ["id", "created_time", "ad_id", "campaign_id", "form_id", "field_data"]
    cut = unix(emulator.data.leads(forms[0]["id"])[4]["created_time"])
    params = {"filtering": [{"field": "time_created", "operator": "GREATER_THAN", "value": cut}]}
    leads = list(LeadgenForm(forms[0]["id"], api=page._api).get_leads(fields=fields, params=params))
    assert len(leads) == 4


def test_lead_data_is_deterministic():
    a, b = EmulatorData(seed=7), EmulatorData(seed=7)
    form_id = a.lead_forms()[0]["id"]
    assert a.leads(form_id) == b.leads(form_id)
    assert a.leads(form_id) != EmulatorData(seed=8).leads(form_id)
    assert a.conversations() == b.conversations()


# -- conversations and messages --------------------------------------------------------------------


def test_conversations_with_nested_messages(emulator, page_token, http_get):
    url = get(
        emulator, page_token, "2001/conversations", platform="messenger", fields=NESTED, limit="4"
    )
    conversations = follow(http_get, url)
    assert len(conversations) == 15
    updated = [c["updated_time"] for c in conversations]
    assert updated == sorted(updated, reverse=True)
    for conversation in conversations:
        assert list(conversation) == ["id", "updated_time", "participants", "messages"]
        assert conversation["id"].startswith("t_")
        psid, page = conversation["participants"]["data"]
        assert page == {"id": "2001", "name": emulator.data.page_name, "email": "2001@facebook.com"}
        assert psid["id"].isdigit() and psid["name"] and psid["email"]
        thread = conversation["messages"]
        assert 1 <= len(thread["data"]) <= 3
        assert thread["data"][0]["created_time"] == conversation["updated_time"]
        stamps = [m["created_time"] for m in thread["data"]]
        assert stamps == sorted(stamps, reverse=True)
        for message in thread["data"]:
            assert set(message) == {"id", "message", "from", "created_time"}
            assert set(message["from"]) == {"id", "name", "email"}
            assert message["from"]["id"] in (psid["id"], "2001")
        total = len(emulator.data.messages(conversation["id"]))
        assert ("next" in thread["paging"]) == (total > 3)


def test_nested_next_link_pages_the_rest_of_the_thread(emulator, page_token, http_get):
    long_one = next(c for c in emulator.data.conversations() if c["message_count"] > 3)
    _, body, _, _ = http_get(get(emulator, page_token, long_one["id"], fields=NESTED))
    thread = body["messages"]
    next_url = thread["paging"]["next"]
    assert urlsplit(next_url).path == f"/v26.0/{long_one['id']}/messages"
    query = parse_qs(urlsplit(next_url).query)
    assert query["fields"] == ["id,message,from,created_time"] and query["limit"] == ["3"]
    rest = follow(http_get, next_url)
    everything = thread["data"] + rest
    assert [m["id"] for m in everything] == [
        m["id"] for m in emulator.data.messages(long_one["id"])
    ]
    assert len(everything) == long_one["message_count"]


def test_messages_edge_defaults_and_paging(emulator, page_token, http_get):
    conversation = emulator.data.conversations()[0]
    rows = follow(http_get, get(emulator, page_token, f"{conversation['id']}/messages", limit="1"))
    assert len(rows) == conversation["message_count"]
    assert all(set(row) == {"id", "created_time"} for row in rows)  # Meta's default fields


def test_add_message_bumps_the_conversation_to_the_top(emulator, page_token, http_get):
    last = emulator.data.conversations()[-1]
    psid = last["participants"]["data"][0]["id"]
    message = emulator.data.add_message(
        None, psid=psid, text="Any news?", created_time=datetime(2026, 12, 1, 9, tzinfo=UTC)
    )
    assert message["conversation_id"] == last["id"]
    url = get(emulator, page_token, "2001/conversations", fields=NESTED, limit="1")
    _, body, _, _ = http_get(url)
    (top,) = body["data"]
    assert top["id"] == last["id"] and top["updated_time"] == "2026-12-01T09:00:00+0000"
    assert top["messages"]["data"][0]["message"] == "Any news?"
    assert top["messages"]["data"][0]["from"]["id"] == psid

    created = emulator.data.add_message(
        None, psid="7999000000000001", text="Hello", created_time=datetime(2026, 12, 2, tzinfo=UTC)
    )
    assert created["conversation_id"] not in {c["id"] for c in EmulatorData().conversations()}
    assert len(emulator.data.conversations()) == 16
    assert emulator.data.conversations()[0]["id"] == created["conversation_id"]


def test_unknown_conversation_id_creates_it(emulator):
    created = emulator.data.add_message(
        "t_42", psid="7999", text="Hi", created_time=datetime(2026, 12, 3, tzinfo=UTC)
    )
    assert created["conversation_id"] == "t_42"
    assert emulator.data.conversation("t_42")["message_count"] == 1


@pytest.mark.parametrize(
    "fields",
    [
        "id,messages.limit(2){id,bogus}",
        "id,messages.limit(x){id}",
        "id,messages.order(chronological){id}",
        "id,messages{id",
        "id,participants.limit(2)",
        "id,nonsense",
    ],
)
def test_bad_field_expansions_are_code_100(emulator, page_token, http_get, fields):
    status, body, _, _ = http_get(get(emulator, page_token, "2001/conversations", fields=fields))
    assert (status, body["error"]["code"]) == (400, 100), body


def test_instagram_platform_is_empty_and_others_rejected(emulator, page_token, http_get):
    _, body, _, _ = http_get(get(emulator, page_token, "2001/conversations", platform="instagram"))
    assert body == {"data": []}
    status, body, _, _ = http_get(get(emulator, page_token, "2001/conversations", platform="fax"))
    assert (status, body["error"]["code"]) == (400, 100)


def test_conversations_through_the_sdk(token, http_get):
    with GraphEmulator(expected_token=token) as emu:
        # Meta serves conversations only to a Page token (code 210 otherwise).
        page = sdk_page(emu, fetch_page_token(emu, token, http_get))
        fields = ["id", "updated_time", "participants", "messages.limit(2){id,message,from}"]
        with pytest.warns(UserWarning):  # the SDK's own type checker does not know expansions
            conversations = [
                c.export_all_data()
                for c in page.get_conversations(
                    fields=fields, params={"platform": "messenger", "limit": 5}
                )
            ]
        assert len(conversations) == 15
        assert all(len(c["messages"]["data"]) <= 2 for c in conversations)
        assert [r.path for r in emu.requests].count("/v26.0/2001/conversations") == 3


def test_snapshot_helpers_cover_everything_served():
    data = EmulatorData()
    leads = all_leads(data)
    assert len(leads) == 60 and len({lead["id"] for lead in leads}) == 60
    conversations = conversations_with_messages(data)
    assert [c["id"] for c in conversations] == [c["id"] for c in data.conversations()]
    for conversation in conversations:
        assert conversation["messages"] == data.messages(conversation["id"])
        assert (
            conversation["psid"]
            == data.conversation(conversation["id"])["participants"]["data"][0]["id"]
        )
