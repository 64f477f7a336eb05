"""Signed deliveries never fail as a whole (invariant 11): poison entries are kept as rejected.

Every test posts a correctly signed body to a real uvicorn on the session PostgreSQL and looks at
`webhook_inbox` (and the Messenger tables) afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time

import orjson
import pytest
from graph_emulator.webhooks import leadgen_payload, messenger_payload, sign
from sqlalchemy import text

from crm_pipeline.api.app import create_app
from crm_pipeline.api.webhook_models import MAX_DEPTH, TRUNCATED
from crm_pipeline_tests.api.conftest import APP_SECRET, LiveApi, api_settings, run_live

PAGE = "2001"
OTHER_PAGE = "3001"
CREATED = 1767225600  # 2026-01-01, unix seconds
CREATED_MS = CREATED * 1000 + 123


def _post(api, body: object):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with api.client() as client:
        return client.post(
            "/webhooks/facebook",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(raw, APP_SECRET),
            },
        )


def _inbox(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT source, event_key, payload, status, error, processed_at, rejected_at"
                " FROM webhook_inbox ORDER BY id"
            )
        ).all()


def _lead_entry(leadgen_id: object = "9990001", page: str = PAGE) -> dict:
    return leadgen_payload(page, "1460000000000001", str(leadgen_id), "23850000000000101", CREATED)[
        "entry"
    ][0]


def _message_entry(psid="7001", mid="m_abc", text_="Hello", page=PAGE, ms=CREATED_MS) -> dict:
    return messenger_payload(page, psid, mid, text_, ms)["entry"][0]


def _delivery(*entries: dict, object_: str = "page") -> dict:
    return {"object": object_, "entry": list(entries)}


def _rejected_key(entry: object) -> str:
    return (
        "rejected:" + hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )


def _counts(stored=0, duplicates=0, ignored=0, rejected=0) -> dict:
    return {"stored": stored, "duplicates": duplicates, "ignored": ignored, "rejected": rejected}


def test_poison_entry_is_rejected_and_the_good_one_stored_and_redelivery_dedupes(api, clean_db):
    poison = _lead_entry()
    poison["changes"][0]["value"]["leadgen_id"] = 9990002.5  # a float id
    delivery = _delivery(_lead_entry("9990001"), poison)

    response = _post(api, delivery)
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, rejected=1)
    good, bad = _inbox(clean_db)
    assert (good.source, good.event_key, good.status, good.error) == (
        "leadgen",
        "9990001",
        "pending",
        None,
    )
    assert good.processed_at is None  # the webhook_leads asset claims it
    assert bad.source == "leadgen"
    assert bad.status == "rejected"
    assert bad.error == "entry.changes[0].value.leadgen_id: must be a string or integer id"
    assert bad.event_key == _rejected_key(poison)
    assert bad.payload == poison
    # Never claimed by webhook_leads (it takes leadgen rows with processed_at IS NULL).
    assert bad.processed_at is not None and bad.rejected_at is not None

    # Meta redelivers the same bytes: nothing new, both counted as duplicates.
    again = _post(api, delivery)
    assert again.status_code == 200
    assert again.json() == _counts(duplicates=2)
    assert len(_inbox(clean_db)) == 2


def _set(entry: dict, path: tuple, value: object) -> dict:
    entry = copy.deepcopy(entry)
    target = entry
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return entry


_LEADGEN_VALUE = ("changes", 0, "value")
_EVENT = ("messaging", 0)

POISON = {
    # name: (entry, expected source, expected reason)
    "float id": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "form_id"), 1460000000000001.0),
        "leadgen",
        "entry.changes[0].value.form_id: must be a string or integer id",
    ),
    "bool id": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "leadgen_id"), True),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must be a string or integer id",
    ),
    "object id": (
        _set(_message_entry(), (*_EVENT, "sender", "id"), {"id": "7001"}),
        "messages",
        "entry.messaging[0].sender.id: must be a string or integer id",
    ),
    "list page id": (
        _set(_lead_entry(), ("id",), [PAGE]),
        "leadgen",
        "entry.id: must be a string or integer id",
    ),
    "empty id": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "leadgen_id"), ""),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must not be empty",
    ),
    "overlong id": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "leadgen_id"), "1" * 65),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must be at most 64 characters",
    ),
    "non-numeric id": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "ad_id"), "23850000000000101; drop"),
        "leadgen",
        "entry.changes[0].value.ad_id: must be a numeric id",
    ),
    "missing leadgen id": (
        _set(_lead_entry(), _LEADGEN_VALUE, {"form_id": "1460000000000001"}),
        "leadgen",
        "entry.changes[0].value.leadgen_id: required",
    ),
    "numeric mid": (
        _set(_message_entry(), (*_EVENT, "message", "mid"), 12345),
        "messages",
        "entry.messaging[0].message.mid: must be a string",
    ),
    "non-string text": (
        _set(_message_entry(), (*_EVENT, "message", "text"), {"body": "Hello"}),
        "messages",
        "entry.messaging[0].message.text: must be a string",
    ),
    "numeric text": (
        _set(_message_entry(), (*_EVENT, "message", "text"), 42),
        "messages",
        "entry.messaging[0].message.text: must be a string",
    ),
    "created_time before 2004": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "created_time"), 1_000_000),
        "leadgen",
        "entry.changes[0].value.created_time: out of range (before 2004 or in the future)",
    ),
    "message timestamp two days ahead": (
        _set(_message_entry(), (*_EVENT, "timestamp"), int((time.time() + 2 * 86400) * 1000)),
        "messages",
        "entry.messaging[0].timestamp: out of range (before 2004 or in the future)",
    ),
    "message timestamp in seconds": (
        _set(_message_entry(), (*_EVENT, "timestamp"), CREATED),
        "messages",
        "entry.messaging[0].timestamp: out of range (before 2004 or in the future)",
    ),
    "float entry time": (
        _set(_lead_entry(), ("time",), CREATED + 0.5),
        "leadgen",
        "entry.time: must be an integer unix time in seconds or milliseconds",
    ),
    "event of another page": (
        _set(_message_entry(), (*_EVENT, "recipient", "id"), OTHER_PAGE),
        "messages",
        "entry.messaging[0].recipient.id: not the entry's page",
    ),
    "lead of another page": (
        _set(_lead_entry(), (*_LEADGEN_VALUE, "page_id"), OTHER_PAGE),
        "leadgen",
        "entry.changes[0].value.page_id: not the entry's page",
    ),
    "not an object": ("just a string", "unknown", "entry: must be an object"),
    "messaging not a list": (
        {"id": PAGE, "time": CREATED_MS, "messaging": {"message": {"mid": "m_x"}}},
        "messages",
        "entry.messaging: must be a list",
    ),
}


@pytest.mark.parametrize("case", POISON, ids=list(POISON))
def test_each_kind_of_poison_is_rejected_alone(api, clean_db, case):
    poison, source, reason = POISON[case]
    good = _message_entry(psid="7009", mid="m_good", text_="Still here")
    response = _post(api, _delivery(poison, good))
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, rejected=1)
    rows = _inbox(clean_db)
    assert [(r.source, r.event_key, r.status) for r in rows] == [
        (source, _rejected_key(poison), "rejected"),
        ("messages", "m_good", "processed"),
    ]
    assert rows[0].error == reason
    assert rows[0].payload == poison
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT id, text FROM messages")).all() == [
            ("m_good", "Still here")
        ]


def test_too_deep_nesting_is_rejected_and_kept_cut(api, clean_db):
    deep: object = "bottom"
    for _ in range(40):
        deep = {"payload": deep}
    poison = _set(_message_entry(), (*_EVENT, "message", "attachments"), [deep])
    response = _post(api, _delivery(_lead_entry(), poison))
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, rejected=1)
    lead, rejected = _inbox(clean_db)
    assert lead.status == "pending"
    assert (rejected.source, rejected.status) == ("messages", "rejected")
    assert rejected.error == f"entry: nested deeper than {MAX_DEPTH} levels"
    assert rejected.event_key == _rejected_key(poison)
    # Kept as far as it is sensible: entry(1) > messaging(2) > event(3) > message(4) > ...
    kept = rejected.payload["messaging"][0]["message"]["attachments"][0]
    depth = 6
    while isinstance(kept, dict):
        kept, depth = kept["payload"], depth + 1
    assert (kept, depth) == (TRUNCATED, MAX_DEPTH + 1)
    # Deeper than our JSON encoder goes (it stops at 255): keyed by what is kept instead.
    abyss: object = "bottom"
    for _ in range(600):
        abyss = [abyss]
    very_deep = _set(_message_entry(mid="m_abyss"), (*_EVENT, "message", "attachments"), abyss)
    assert _post(api, _delivery(very_deep)).json() == _counts(rejected=1)
    kept_row = _inbox(clean_db)[-1]
    assert kept_row.error == f"entry: nested deeper than {MAX_DEPTH} levels"
    assert kept_row.event_key == _rejected_key(kept_row.payload)
    assert _post(api, _delivery(very_deep)).json() == _counts(duplicates=1)
    # A message nested just within the limit is fine.
    shallow: object = "ok"
    for _ in range(MAX_DEPTH - 5):
        shallow = {"payload": shallow}
    fine = _set(_message_entry(mid="m_fine"), (*_EVENT, "message", "attachments"), [shallow])
    assert _post(api, _delivery(fine)).json() == _counts(stored=1)


def test_nul_rejects_only_its_entry(api, clean_db):
    poison = _message_entry(psid="7002", mid="m_nul", text_="Hi\u0000there")
    good = _message_entry(psid="7001", mid="m_ok", text_="Hello")
    body = json.dumps(_delivery(poison, good)).encode()
    assert b"\\u0000" in body
    response = _post(api, body)
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, rejected=1)
    rejected, stored = _inbox(clean_db)
    assert rejected.status == "rejected"
    assert rejected.error == (
        "entry.messaging[0].message.text: contains U+0000, which cannot be stored"
    )
    assert rejected.payload["messaging"][0]["message"]["text"] == "Hithere"
    assert rejected.event_key == _rejected_key(poison)
    assert (stored.event_key, stored.status) == ("m_ok", "processed")
    assert _post(api, body).json() == _counts(duplicates=2)


def test_unknown_object_is_rejected(api, clean_db):
    entry = _message_entry()
    response = _post(api, _delivery(entry, _lead_entry(), object_="instagram"))
    assert response.status_code == 200
    assert response.json() == _counts(rejected=2)
    rows = _inbox(clean_db)
    assert [(r.source, r.status, r.error) for r in rows] == [
        ("messages", "rejected", "object: must be 'page'"),
        ("leadgen", "rejected", "object: must be 'page'"),
    ]
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar() == 0


@pytest.mark.parametrize(
    "body",
    [{"object": "page"}, {"object": "page", "entry": "x"}, ["not", "an", "object"], 7],
    ids=["no entry", "entry not a list", "a list", "a number"],
)
def test_signed_json_that_is_not_a_notification_is_one_rejected_row(api, clean_db, body):
    response = _post(api, body)
    assert response.status_code == 200
    assert response.json() == _counts(rejected=1)
    (row,) = _inbox(clean_db)
    assert (row.source, row.status, row.payload) == ("unknown", "rejected", body)
    assert row.event_key == _rejected_key(body)
    assert row.error.startswith("body")
    assert _post(api, body).json() == _counts(duplicates=1)


def test_non_message_events_are_ignored_not_rejected(api, clean_db):
    entry = _message_entry()
    base = {"sender": {"id": "7001"}, "recipient": {"id": PAGE}, "timestamp": CREATED_MS}
    entry["messaging"] += [
        {**base, "read": {"watermark": CREATED_MS}},
        {**base, "delivery": {"mids": ["m_abc"], "watermark": CREATED_MS}},
        {**base, "postback": {"title": "Start", "payload": "GET_STARTED"}},
    ]
    feed = {"id": PAGE, "time": CREATED, "changes": [{"field": "feed", "value": {"item": "x"}}]}
    response = _post(api, _delivery(entry, feed))
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, ignored=4)
    assert [r.status for r in _inbox(clean_db)] == ["processed"]


@pytest.fixture
def page_api(clean_db, database_url, dirs):
    """The API with FB_PAGE_ID set: entries of other pages are rejected."""
    base = api_settings(dirs["cache"])
    if dataclasses.is_dataclass(base):
        settings = dataclasses.replace(base, page_id=PAGE)
    else:  # a pydantic-settings model
        settings = base.model_copy(update={"page_id": PAGE})
    app = create_app(settings, database_url=database_url, cache_dir=dirs["cache"])
    live = run_live(app)
    url = next(live)
    yield LiveApi(url, app, dirs["cache"])
    next(live, None)


def test_unknown_page_is_rejected_when_a_page_is_configured(page_api, clean_db):
    ours = _lead_entry("9990001", page=PAGE)
    theirs = _lead_entry("9990002", page=OTHER_PAGE)
    response = _post(page_api, _delivery(ours, theirs))
    assert response.status_code == 200
    assert response.json() == _counts(stored=1, rejected=1)
    rows = _inbox(clean_db)
    assert [(r.event_key, r.status) for r in rows] == [
        ("9990001", "pending"),
        (_rejected_key(theirs), "rejected"),
    ]
    assert rows[1].error == "entry.id: not a page this receiver serves (FB_PAGE_ID)"


def test_any_page_is_accepted_when_none_is_configured(api, clean_db):
    assert api.app.state.settings.page_id is None
    response = _post(api, _delivery(_lead_entry("1", page=PAGE), _lead_entry("2", OTHER_PAGE)))
    assert response.json() == _counts(stored=2)


def test_psids_link_per_page_only(api, clean_db):
    # The same PSID number on another page is another person, in another conversation.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, psid) VALUES"
                " ('t_other', :other, '7001'), ('wh_2001_7003', :other, '7003')"
            ),
            {"other": OTHER_PAGE},
        )
    echo = _message_entry(psid="7001", mid="m_echo", text_="We open at 9")
    echo["messaging"][0].update(sender={"id": PAGE}, recipient={"id": "7001"})
    echo["messaging"][0]["message"]["is_echo"] = True
    clash = _message_entry(psid="7003", mid="m_clash", text_="Hi")
    response = _post(api, _delivery(_message_entry(psid="7001"), echo, clash))
    assert response.status_code == 200
    assert response.json() == _counts(stored=2, rejected=1)
    with clean_db.connect() as conn:
        conversations = conn.execute(
            text("SELECT id, page_id, psid FROM conversations ORDER BY id")
        ).all()
        messages = conn.execute(
            text("SELECT id, conversation_id, from_id FROM messages ORDER BY id")
        ).all()
    assert conversations == [
        ("t_other", OTHER_PAGE, "7001"),
        ("wh_2001_7001", PAGE, "7001"),
        ("wh_2001_7003", OTHER_PAGE, "7003"),
    ]
    assert messages == [
        ("m_abc", "wh_2001_7001", "7001"),
        ("m_echo", "wh_2001_7001", PAGE),
    ]
    rows = _inbox(clean_db)
    assert [(r.event_key, r.status) for r in rows] == [
        ("m_abc", "processed"),
        ("m_echo", "processed"),
        (_rejected_key(clash), "rejected"),
    ]
    rejected = rows[-1]
    assert rejected.error == (
        "entry.messaging: the conversation id is taken by another page or person"
    )


FAILURES = {
    # a CHECK constraint: IntegrityError (CheckViolation)
    "check": (
        "ALTER TABLE messages ADD CONSTRAINT test_no_boom CHECK (text IS DISTINCT FROM 'boom')",
        "ALTER TABLE messages DROP CONSTRAINT IF EXISTS test_no_boom",
        "entry: the database refused it (CheckViolation, SQLSTATE 23514)",
    ),
    # a trigger that finds the value bad: DataError (InvalidParameterValue)
    "trigger": (
        "CREATE FUNCTION test_no_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.text = 'boom' THEN RAISE EXCEPTION 'no boom' USING ERRCODE = '22023';"
        " END IF; RETURN NEW; END $$;"
        " CREATE TRIGGER test_no_boom BEFORE INSERT ON messages"
        " FOR EACH ROW EXECUTE FUNCTION test_no_boom()",
        "DROP TRIGGER IF EXISTS test_no_boom ON messages; DROP FUNCTION IF EXISTS test_no_boom()",
        "entry: the database refused it (InvalidParameterValue, SQLSTATE 22023)",
    ),
}


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
def test_entry_the_database_refuses_midway_is_rejected_alone(api, clean_db, failure):
    install, remove, reason = FAILURES[failure]
    first = _message_entry(psid="7001", mid="m_1", text_="Hello")
    # Its inbox row, its conversation and its first message are written before "boom" fails.
    poison = _message_entry(psid="7002", mid="m_2", text_="fine so far")
    poison["messaging"].append(
        {**poison["messaging"][0], "message": {"mid": "m_3", "text": "boom"}}
    )
    last = _lead_entry("9990001")
    with clean_db.begin() as conn:
        conn.execute(text(install))
    try:
        response = _post(api, _delivery(first, poison, last))
    finally:
        with clean_db.begin() as conn:
            conn.execute(text(remove))
    assert response.status_code == 200
    assert response.json() == _counts(stored=2, rejected=1)
    rows = _inbox(clean_db)
    assert [(r.source, r.event_key, r.status) for r in rows] == [
        ("messages", "m_1", "processed"),
        ("messages", _rejected_key(poison), "rejected"),
        ("leadgen", "9990001", "pending"),
    ]
    assert rows[1].error == reason
    assert rows[1].payload == poison
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT psid FROM conversations")).scalars().all() == ["7001"]
        assert conn.execute(text("SELECT id FROM messages")).scalars().all() == ["m_1"]


def test_a_failing_database_is_a_503_and_keeps_nothing(api, clean_db):
    # A serialization failure is the database's trouble, not the entry's: Meta must redeliver.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION test_busy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'busy' USING ERRCODE = '40001'; END $$;"
                " CREATE TRIGGER test_busy BEFORE INSERT ON messages"
                " FOR EACH ROW EXECUTE FUNCTION test_busy()"
            )
        )
    try:
        response = _post(api, _delivery(_lead_entry(), _message_entry()))
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("DROP TRIGGER test_busy ON messages; DROP FUNCTION test_busy()"))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert _inbox(clean_db) == []
    assert _post(api, _delivery(_lead_entry(), _message_entry())).json() == _counts(stored=2)


def test_one_log_line_per_delivery_with_counts_only(api, clean_db, caplog):
    secret_text = "My email is ada@example.com"
    poison = _set(_message_entry(mid="m_bad"), (*_EVENT, "message", "text"), 42)
    poison["messaging"][0]["sender"]["name"] = "Ada Lovelace"
    with caplog.at_level(logging.DEBUG, logger="crm_pipeline"):
        response = _post(api, _delivery(_message_entry(text_=secret_text), poison))
    assert response.json() == _counts(stored=1, rejected=1)
    records = [r for r in caplog.records if r.name == "crm_pipeline.api.webhooks"]
    assert [r.getMessage() for r in records] == [
        "webhook delivery: 1 stored, 0 duplicates, 0 ignored, 1 rejected"
    ]
    assert records[0].levelno == logging.WARNING
    assert "ada@example.com" not in caplog.text and "Lovelace" not in caplog.text
    assert all("ada@" not in (r.error or "") for r in _inbox(clean_db))
