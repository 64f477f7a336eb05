"""Signed deliveries never fail as a whole (invariant 11): poison entries are kept as rejected.

Every test posts a correctly signed body to a real uvicorn on the session PostgreSQL and looks at
`webhook_inbox` (and the Messenger tables) afterwards. The receiving page and the database
refusing an entry: `test_webhook_pages.py`, `test_webhook_db_refusals.py`.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from sqlalchemy import text

from crm_pipeline.api.webhook_models import MAX_DEPTH, TRUNCATED
from crm_pipeline_tests.api.webhook_helpers import (
    CREATED,
    CREATED_MS,
    EVENT,
    LEADGEN_VALUE,
    OTHER_PAGE,
    PAGE,
    counts,
    delivery,
    inbox,
    lead_entry,
    message_entry,
    post,
    rejected_key,
    set_at,
)


def test_poison_entry_is_rejected_and_the_good_one_stored_and_redelivery_dedupes(api, clean_db):
    poison = lead_entry()
    poison["changes"][0]["value"]["leadgen_id"] = 9990002.5  # a float id
    body = delivery(lead_entry("9990001"), poison)

    response = post(api, body)
    assert response.status_code == 200
    assert response.json() == counts(stored=1, rejected=1)
    good, bad = inbox(clean_db)
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
    assert bad.event_key == rejected_key(poison)
    assert bad.payload == poison
    # Never claimed by webhook_leads (it takes leadgen rows with processed_at IS NULL).
    assert bad.processed_at is not None and bad.rejected_at is not None

    # Meta redelivers the same bytes: nothing new, both counted as duplicates.
    again = post(api, body)
    assert again.status_code == 200
    assert again.json() == counts(duplicates=2)
    assert len(inbox(clean_db)) == 2


POISON = {
    # name: (entry, expected source, expected reason)
    "float id": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "form_id"), 1460000000000001.0),
        "leadgen",
        "entry.changes[0].value.form_id: must be a string or integer id",
    ),
    "bool id": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "leadgen_id"), True),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must be a string or integer id",
    ),
    "object id": (
        set_at(message_entry(), (*EVENT, "sender", "id"), {"id": "7001"}),
        "messages",
        "entry.messaging[0].sender.id: must be a string or integer id",
    ),
    "list page id": (
        set_at(lead_entry(), ("id",), [PAGE]),
        "leadgen",
        "entry.id: must be a string or integer id",
    ),
    "empty id": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "leadgen_id"), ""),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must not be empty",
    ),
    "overlong id": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "leadgen_id"), "1" * 65),
        "leadgen",
        "entry.changes[0].value.leadgen_id: must be at most 64 characters",
    ),
    "non-numeric id": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "ad_id"), "23850000000000101; drop"),
        "leadgen",
        "entry.changes[0].value.ad_id: must be a numeric id",
    ),
    "missing leadgen id": (
        set_at(lead_entry(), LEADGEN_VALUE, {"form_id": "1460000000000001"}),
        "leadgen",
        "entry.changes[0].value.leadgen_id: required",
    ),
    "numeric mid": (
        set_at(message_entry(), (*EVENT, "message", "mid"), 12345),
        "messages",
        "entry.messaging[0].message.mid: must be a string",
    ),
    "non-string text": (
        set_at(message_entry(), (*EVENT, "message", "text"), {"body": "Hello"}),
        "messages",
        "entry.messaging[0].message.text: must be a string",
    ),
    "numeric text": (
        set_at(message_entry(), (*EVENT, "message", "text"), 42),
        "messages",
        "entry.messaging[0].message.text: must be a string",
    ),
    "created_time before 2004": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "created_time"), 1_000_000),
        "leadgen",
        "entry.changes[0].value.created_time: out of range (before 2004 or in the future)",
    ),
    "message timestamp two days ahead": (
        set_at(message_entry(), (*EVENT, "timestamp"), int((time.time() + 2 * 86400) * 1000)),
        "messages",
        "entry.messaging[0].timestamp: out of range (before 2004 or in the future)",
    ),
    "message timestamp in seconds": (
        set_at(message_entry(), (*EVENT, "timestamp"), CREATED),
        "messages",
        "entry.messaging[0].timestamp: out of range (before 2004 or in the future)",
    ),
    "float entry time": (
        set_at(lead_entry(), ("time",), CREATED + 0.5),
        "leadgen",
        "entry.time: must be an integer unix time in seconds or milliseconds",
    ),
    "event of another page": (
        set_at(message_entry(), (*EVENT, "recipient", "id"), OTHER_PAGE),
        "messages",
        "entry.messaging[0].recipient.id: not the entry's page",
    ),
    "lead of another page": (
        set_at(lead_entry(), (*LEADGEN_VALUE, "page_id"), OTHER_PAGE),
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
    good = message_entry(psid="7009", mid="m_good", text_="Still here")
    response = post(api, delivery(poison, good))
    assert response.status_code == 200
    assert response.json() == counts(stored=1, rejected=1)
    rows = inbox(clean_db)
    assert [(r.source, r.event_key, r.status) for r in rows] == [
        (source, rejected_key(poison), "rejected"),
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
    poison = set_at(message_entry(), (*EVENT, "message", "attachments"), [deep])
    response = post(api, delivery(lead_entry(), poison))
    assert response.status_code == 200
    assert response.json() == counts(stored=1, rejected=1)
    lead, rejected = inbox(clean_db)
    assert lead.status == "pending"
    assert (rejected.source, rejected.status) == ("messages", "rejected")
    assert rejected.error == f"entry: nested deeper than {MAX_DEPTH} levels"
    assert rejected.event_key == rejected_key(poison)
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
    very_deep = set_at(message_entry(mid="m_abyss"), (*EVENT, "message", "attachments"), abyss)
    assert post(api, delivery(very_deep)).json() == counts(rejected=1)
    kept_row = inbox(clean_db)[-1]
    assert kept_row.error == f"entry: nested deeper than {MAX_DEPTH} levels"
    assert kept_row.event_key == rejected_key(kept_row.payload)
    assert post(api, delivery(very_deep)).json() == counts(duplicates=1)
    # A message nested just within the limit is fine.
    shallow: object = "ok"
    for _ in range(MAX_DEPTH - 5):
        shallow = {"payload": shallow}
    fine = set_at(message_entry(mid="m_fine"), (*EVENT, "message", "attachments"), [shallow])
    assert post(api, delivery(fine)).json() == counts(stored=1)


def test_nul_rejects_only_its_entry(api, clean_db):
    poison = message_entry(psid="7002", mid="m_nul", text_="Hi\u0000there")
    good = message_entry(psid="7001", mid="m_ok", text_="Hello")
    body = json.dumps(delivery(poison, good)).encode()
    assert b"\\u0000" in body
    response = post(api, body)
    assert response.status_code == 200
    assert response.json() == counts(stored=1, rejected=1)
    rejected, stored = inbox(clean_db)
    assert rejected.status == "rejected"
    assert rejected.error == (
        "entry.messaging[0].message.text: contains U+0000, which cannot be stored"
    )
    assert rejected.payload["messaging"][0]["message"]["text"] == "Hithere"
    assert rejected.event_key == rejected_key(poison)
    assert (stored.event_key, stored.status) == ("m_ok", "processed")
    assert post(api, body).json() == counts(duplicates=2)


def test_unknown_object_is_rejected(api, clean_db):
    entry = message_entry()
    response = post(api, delivery(entry, lead_entry(), object_="instagram"))
    assert response.status_code == 200
    assert response.json() == counts(rejected=2)
    rows = inbox(clean_db)
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
    response = post(api, body)
    assert response.status_code == 200
    assert response.json() == counts(rejected=1)
    (row,) = inbox(clean_db)
    assert (row.source, row.status, row.payload) == ("unknown", "rejected", body)
    assert row.event_key == rejected_key(body)
    assert row.error.startswith("body")
    assert post(api, body).json() == counts(duplicates=1)


def test_non_message_events_are_ignored_not_rejected(api, clean_db):
    entry = message_entry()
    base = {"sender": {"id": "7001"}, "recipient": {"id": PAGE}, "timestamp": CREATED_MS}
    entry["messaging"] += [
        {**base, "read": {"watermark": CREATED_MS}},
        {**base, "delivery": {"mids": ["m_abc"], "watermark": CREATED_MS}},
        {**base, "postback": {"title": "Start", "payload": "GET_STARTED"}},
    ]
    feed = {"id": PAGE, "time": CREATED, "changes": [{"field": "feed", "value": {"item": "x"}}]}
    response = post(api, delivery(entry, feed))
    assert response.status_code == 200
    assert response.json() == counts(stored=1, ignored=4)
    assert [r.status for r in inbox(clean_db)] == ["processed"]


def test_one_log_line_per_delivery_with_counts_only(api, clean_db, caplog):
    secret_text = "My email is ada@example.com"
    poison = set_at(message_entry(mid="m_bad"), (*EVENT, "message", "text"), 42)
    poison["messaging"][0]["sender"]["name"] = "Ada Lovelace"
    with caplog.at_level(logging.DEBUG, logger="crm_pipeline"):
        response = post(api, delivery(message_entry(text_=secret_text), poison))
    assert response.json() == counts(stored=1, rejected=1)
    records = [r for r in caplog.records if r.name == "crm_pipeline.api.webhooks"]
    assert [r.getMessage() for r in records] == [
        "webhook delivery: 1 stored, 0 duplicates, 0 ignored, 1 rejected"
    ]
    assert records[0].levelno == logging.WARNING
    assert "ada@example.com" not in caplog.text and "Lovelace" not in caplog.text
    assert all("ada@" not in (r.error or "") for r in inbox(clean_db))
