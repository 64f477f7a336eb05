"""Webhooks through a real uvicorn: handshake, signature checks, dedup, limits, Messenger rows."""

from __future__ import annotations

import json
import logging

from graph_emulator.webhooks import (
    leadgen_payload,
    messenger_payload,
    post_webhook,
    sign,
)
from sqlalchemy import text

from crm_pipeline.api.server import RedactQuerySecrets
from crm_pipeline_tests.api.conftest import APP_SECRET, VERIFY_TOKEN

PAGE = "2001"


def _inbox(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT source, event_key, payload, processed_at FROM webhook_inbox ORDER BY id")
        ).all()


def _post_raw(api, body: bytes, signature: str | None, **headers):
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    with api.client() as client:
        return client.post(
            "/webhooks/facebook",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )


def test_handshake_echoes_challenge_only_for_the_right_token(api):
    with api.client() as client:
        ok = client.get(
            "/webhooks/facebook",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "1158201444",
            },
        )
        assert ok.status_code == 200
        assert ok.text == "1158201444"
        assert ok.headers["content-type"].startswith("text/plain")
        assert ok.headers["x-content-type-options"] == "nosniff"
        for params in (
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
            {"hub.mode": "subscribe", "hub.challenge": "1"},
        ):
            denied = client.get("/webhooks/facebook", params=params)
            assert denied.status_code == 403
            assert VERIFY_TOKEN not in denied.text


def test_signed_leadgen_is_stored_unprocessed(api, clean_db):
    payload = leadgen_payload(PAGE, "1460000000000001", "9990001", "23850000000000101", 1767225600)
    # Meta may send ids as numbers: they are stored as text all the same.
    payload["entry"][0]["changes"][0]["value"]["leadgen_id"] = 9990001
    assert post_webhook(f"{api.url}/webhooks/facebook", payload, APP_SECRET) == 200
    rows = _inbox(clean_db)
    assert [(r.source, r.event_key) for r in rows] == [("leadgen", "9990001")]
    assert rows[0].processed_at is None
    assert rows[0].payload["form_id"] == "1460000000000001"
    assert rows[0].payload["page_id"] == PAGE


def test_replayed_delivery_is_acknowledged_and_deduplicated(api, clean_db):
    payload = leadgen_payload(PAGE, "1460000000000001", "9990002", None, 1767225600)
    url = f"{api.url}/webhooks/facebook"
    assert post_webhook(url, payload, APP_SECRET) == 200
    body = json.dumps(payload).encode()
    again = _post_raw(api, body, sign(body, APP_SECRET))
    assert again.status_code == 200
    assert again.json() == {"stored": 0, "duplicates": 1, "ignored": 0, "rejected": 0}
    assert len(_inbox(clean_db)) == 1


def test_tampered_or_missing_signature_stores_nothing(api, clean_db):
    payload = leadgen_payload(PAGE, "1460000000000001", "9990003", None, 1767225600)
    body = json.dumps(payload).encode()
    signature = sign(body, APP_SECRET)
    tampered = body.replace(b"9990003", b"9990004")
    response = _post_raw(api, tampered, signature)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert _post_raw(api, body, None).status_code == 401
    assert _post_raw(api, body, "sha256=" + "0" * 64).status_code == 403
    assert _post_raw(api, body, sign(body, "another-secret")).status_code == 403
    assert _post_raw(api, body, "sha1=" + "0" * 40).status_code == 403
    assert _inbox(clean_db) == []


def test_malformed_json_is_a_400_problem(api, clean_db):
    # Only a body that is not JSON at all is refused; a signed JSON body is always acknowledged
    # (see test_webhook_entries.py for bodies without entries, NULs and other poison).
    body = b'{"object": "page", "entry": [}'
    response = _post_raw(api, body, sign(body, APP_SECRET))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert "Traceback" not in response.text
    assert _inbox(clean_db) == []


def test_oversized_body_is_413_and_stores_nothing(clean_db, database_url, start_api):
    api = start_api(database_url, max_body_bytes=2048)
    payload = leadgen_payload(PAGE, "1460000000000001", "9990005", None, 1767225600)
    payload["padding"] = "x" * 4096
    body = json.dumps(payload).encode()
    response = _post_raw(api, body, sign(body, APP_SECRET))
    assert response.status_code == 413
    assert response.json()["title"] == "Request body too large"

    # A chunked body without Content-Length is cut off too, and answered at once even when its
    # last chunk is the one over the limit (nothing is left to discard: the server must not
    # wait its 10 s body timeout for more). The client's 3 s timeout fails a server that waits.
    def chunks():
        yield body[:1000]
        yield body[1000:]

    for _ in range(3):
        with api.client() as client:
            streamed = client.post(
                "/webhooks/facebook",
                content=chunks(),
                headers={"X-Hub-Signature-256": sign(body, APP_SECRET)},
                timeout=3,
            )
        assert streamed.status_code == 413
    assert _inbox(clean_db) == []


def test_messenger_event_becomes_conversation_and_message_linked_by_psid(api, clean_db):
    with clean_db.begin() as conn:
        customer_id = conn.execute(
            text("INSERT INTO customers (name, fb_psid) VALUES ('Ada', '7001') RETURNING id")
        ).scalar_one()
    payload = messenger_payload(PAGE, "7001", "m_abc", "Hello, is this in stock?", 1767225600123)
    payload["entry"][0]["messaging"][0]["sender"]["id"] = 7001  # a number this time
    url = f"{api.url}/webhooks/facebook"
    assert post_webhook(url, payload, APP_SECRET) == 200
    assert post_webhook(url, payload, APP_SECRET) == 200  # redelivery
    second = messenger_payload(PAGE, "7001", "m_def", "Hello?", 1767225660000)
    assert post_webhook(url, second, APP_SECRET) == 200
    with clean_db.connect() as conn:
        conversations = conn.execute(
            text("SELECT id, page_id, psid, customer_id, updated_time FROM conversations")
        ).all()
        messages = conn.execute(
            text("SELECT id, conversation_id, from_id, text FROM messages ORDER BY id")
        ).all()
        changes = conn.execute(
            text("SELECT entity, customer_id FROM change_log WHERE entity = 'messages'")
        ).all()
    assert len(conversations) == 1
    conversation = conversations[0]
    assert (conversation.page_id, conversation.psid, conversation.customer_id) == (
        PAGE,
        "7001",
        customer_id,
    )
    assert conversation.updated_time.timestamp() == 1767225660
    assert [(m.id, m.from_id, m.text) for m in messages] == [
        ("m_abc", "7001", "Hello, is this in stock?"),
        ("m_def", "7001", "Hello?"),
    ]
    assert {m.conversation_id for m in messages} == {conversation.id}
    # The triggers logged the new messages against the customer: their 360 file gets rebuilt.
    assert {(c.entity, c.customer_id) for c in changes} == {("messages", customer_id)}
    inbox = _inbox(clean_db)
    assert [(r.source, r.event_key) for r in inbox] == [
        ("messages", "m_abc"),
        ("messages", "m_def"),
    ]
    assert all(r.processed_at is not None for r in inbox)


def test_verify_token_is_masked_in_access_logs():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (
            "127.0.0.1:5000",
            "GET",
            f"/webhooks/facebook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
            "1.1",
            200,
        ),
        None,
    )
    RedactQuerySecrets().filter(record)
    message = record.getMessage()
    assert VERIFY_TOKEN not in message
    assert "hub.verify_token=***" in message
    assert "hub.challenge=1" in message
