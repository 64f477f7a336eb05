"""Signed webhook deliveries for the API tests: entries in Meta's shape, posting them to a live
API, and reading `webhook_inbox` back."""

from __future__ import annotations

import copy
import hashlib
import json

import orjson
from graph_emulator.webhooks import leadgen_payload, messenger_payload, sign
from sqlalchemy import text

from crm_pipeline_tests.api.conftest import APP_SECRET

PAGE = "2001"
OTHER_PAGE = "3001"
CREATED = 1767225600  # 2026-01-01, unix seconds
CREATED_MS = CREATED * 1000 + 123
LEADGEN_VALUE = ("changes", 0, "value")  # where a leadgen entry's fields are (see `set_at`)
EVENT = ("messaging", 0)  # a Messenger entry's first event


def post(api, body: object):
    """POST `body` (bytes as is, else as JSON) to the webhook route, correctly signed."""
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


def inbox(engine) -> list:
    """Every `webhook_inbox` row, in arrival order."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT source, event_key, payload, status, error, processed_at, rejected_at"
                " FROM webhook_inbox ORDER BY id"
            )
        ).all()


def lead_entry(leadgen_id: object = "9990001", page: str = PAGE) -> dict:
    """One valid leadgen entry of `page`."""
    return leadgen_payload(page, "1460000000000001", str(leadgen_id), "23850000000000101", CREATED)[
        "entry"
    ][0]


def message_entry(psid="7001", mid="m_abc", text_="Hello", page=PAGE, ms=CREATED_MS) -> dict:
    """One valid Messenger entry: `psid` wrote `text_` to `page`."""
    return messenger_payload(page, psid, mid, text_, ms)["entry"][0]


def delivery(*entries: dict, object_: str = "page") -> dict:
    """A notification body holding `entries`."""
    return {"object": object_, "entry": list(entries)}


def rejected_key(entry: object) -> str:
    """The event key a rejected entry is stored under (a digest of its canonical JSON)."""
    return (
        "rejected:" + hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )


def counts(stored=0, duplicates=0, ignored=0, rejected=0) -> dict:
    """The receiver's answer for a delivery with these outcomes."""
    return {"stored": stored, "duplicates": duplicates, "ignored": ignored, "rejected": rejected}


def set_at(entry: dict, path: tuple, value: object) -> dict:
    """A copy of `entry` with `value` at `path` (keys and list indexes)."""
    entry = copy.deepcopy(entry)
    target = entry
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return entry
