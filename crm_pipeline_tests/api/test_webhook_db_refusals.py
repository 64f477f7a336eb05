"""The database refusing a webhook entry: that entry alone is rejected; a database in trouble
is a 503 that keeps nothing, so Meta redelivers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from crm_pipeline_tests.api.webhook_helpers import (
    counts,
    delivery,
    inbox,
    lead_entry,
    message_entry,
    post,
    rejected_key,
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
    first = message_entry(psid="7001", mid="m_1", text_="Hello")
    # Its inbox row, its conversation and its first message are written before "boom" fails.
    poison = message_entry(psid="7002", mid="m_2", text_="fine so far")
    poison["messaging"].append(
        {**poison["messaging"][0], "message": {"mid": "m_3", "text": "boom"}}
    )
    last = lead_entry("9990001")
    with clean_db.begin() as conn:
        conn.execute(text(install))
    try:
        response = post(api, delivery(first, poison, last))
    finally:
        with clean_db.begin() as conn:
            conn.execute(text(remove))
    assert response.status_code == 200
    assert response.json() == counts(stored=2, rejected=1)
    rows = inbox(clean_db)
    assert [(r.source, r.event_key, r.status) for r in rows] == [
        ("messages", "m_1", "processed"),
        ("messages", rejected_key(poison), "rejected"),
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
        response = post(api, delivery(lead_entry(), message_entry()))
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("DROP TRIGGER test_busy ON messages; DROP FUNCTION test_busy()"))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert inbox(clean_db) == []
    assert post(api, delivery(lead_entry(), message_entry())).json() == counts(stored=2)
