"""Signed Meta webhooks sent by the emulator, checked by a tiny local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from graph_emulator.webhooks import (
    leadgen_payload,
    messenger_payload,
    post_webhook,
    sign,
)

SECRET = "app-secret-for-webhooks"


class _Receiver(BaseHTTPRequestHandler):
    """Verifies X-Hub-Signature-256 over the raw body like a real endpoint must."""

    received: list[dict]

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        given = self.headers.get("X-Hub-Signature-256", "")
        ok = hmac.compare_digest(expected, given)
        self.received.append(
            {"ok": ok, "raw": raw, "headers": dict(self.headers), "body": json.loads(raw)}
        )
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []
    handler = type("Bound", (_Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/meta", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_sign_is_hmac_sha256_hex():
    body = b'{"object":"page"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert sign(body, "other") != sign(body, "s3cret")
    assert sign(body + b" ", "s3cret") != sign(body, "s3cret")


def test_leadgen_payload_shape():
    created = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    payload = leadgen_payload("2001", "1460000000000001", "1500000000000099", "238520001", created)
    assert payload == {
        "object": "page",
        "entry": [
            {
                "id": "2001",
                "time": int(created.timestamp()),
                "changes": [
                    {
                        "field": "leadgen",
                        "value": {
                            "ad_id": "238520001",
                            "adgroup_id": "238520001",
                            "form_id": "1460000000000001",
                            "leadgen_id": "1500000000000099",
                            "created_time": int(created.timestamp()),
                            "page_id": "2001",
                        },
                    }
                ],
            }
        ],
    }
    organic = leadgen_payload("2001", "1", "2", None, 1_760_000_000)
    assert "ad_id" not in organic["entry"][0]["changes"][0]["value"]


def test_messenger_payload_shape():
    payload = messenger_payload("2001", "7100000000000001", "m_abc", "hello", 1_764_000_000_123)
    (entry,) = payload["entry"]
    assert payload["object"] == "page"
    assert (entry["id"], entry["time"]) == ("2001", 1_764_000_000_123)
    assert entry["messaging"] == [
        {
            "sender": {"id": "7100000000000001"},
            "recipient": {"id": "2001"},
            "timestamp": 1_764_000_000_123,
            "message": {"mid": "m_abc", "text": "hello"},
        }
    ]


def test_post_webhook_sends_the_exact_signed_bytes(receiver):
    url, received = receiver
    payload = messenger_payload("2001", "71", "m_1", "héllo ✓", 1_764_000_000_000)
    assert post_webhook(url, payload, SECRET) == 200
    (got,) = received
    assert got["ok"]
    assert got["body"] == payload
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["X-Hub-Signature-256"] == sign(got["raw"], SECRET)
    legacy = "sha1=" + hmac.new(SECRET.encode(), got["raw"], hashlib.sha1).hexdigest()
    assert got["headers"]["X-Hub-Signature"] == legacy


def test_wrong_secret_is_rejected_by_the_receiver(receiver):
    url, received = receiver
    payload = leadgen_payload("2001", "1", "2", "3", 1_760_000_000)
    assert post_webhook(url, payload, "not-the-secret") == 403
    assert received[0]["ok"] is False
