"""Meta webhooks: the subscription handshake and signed event delivery.

POST bodies are verified against `X-Hub-Signature-256` (HMAC-SHA256 of the exact raw bytes with
the app secret, compared in constant time) before anything is parsed or stored. Each event is
written to `webhook_inbox` under a natural key (leadgen id, message mid) so Meta's redeliveries
are no-ops. The handler never calls the Graph API: leadgen events are enriched later by the
`webhook_leads` Dagster asset; Messenger events carry everything needed, so they become
`conversations`/`messages` rows here, in the same transaction as their inbox row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import Connection, text

from crm_pipeline.api.problems import Problem

log = logging.getLogger("crm_pipeline.api.webhooks")

router = APIRouter(tags=["webhooks"])

SIGNATURE_HEADER = "X-Hub-Signature-256"


def verify_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """True when `header` is `sha256=<hex HMAC-SHA256(app_secret, body)>` (constant time)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[len("sha256=") :].strip().lower().encode())


@router.get(
    "/webhooks/facebook",
    response_class=PlainTextResponse,
    summary="Meta's subscription handshake",
    responses={403: {"description": "verify token mismatch"}},
)
def handshake(request: Request) -> PlainTextResponse:
    """Echo `hub.challenge` when `hub.mode=subscribe` and `hub.verify_token` matches."""
    params = request.query_params
    configured = request.app.state.settings.webhook_verify_token
    token = params.get("hub.verify_token") or ""
    challenge = params.get("hub.challenge")
    if (
        configured is None
        or params.get("hub.mode") != "subscribe"
        or challenge is None
        or len(challenge) > 256
        or not hmac.compare_digest(token.encode(), configured.reveal().encode())
    ):
        if configured is None:
            log.warning("webhook handshake refused: FB_WEBHOOK_VERIFY_TOKEN is not set")
        raise Problem(403, "Verification failed")
    # Echoed as inert text: never sniffed as HTML by a browser.
    return PlainTextResponse(challenge, headers={"X-Content-Type-Options": "nosniff"})


def _id(value: Any) -> str | None:
    """Meta ids arrive as strings or numbers; store them as text without a trailing `.0`."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text_value = str(value).strip()
    return text_value or None


def _get(event: dict, outer: str, inner: str) -> Any:
    value = event.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _from_unix(value: Any, *, millis: bool) -> dt.datetime | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return dt.datetime.fromtimestamp(number / 1000 if millis else number, dt.UTC)


def _store(conn: Connection, source: str, key: str, payload: dict, processed: bool) -> bool:
    """Insert one inbox row; False when Meta already delivered it (same source and key)."""
    inserted = conn.execute(
        text(
            "INSERT INTO webhook_inbox (source, event_key, payload, processed_at)"
            " VALUES (:source, :key, CAST(:payload AS jsonb),"
            "         CASE WHEN :processed THEN now() END)"
            " ON CONFLICT (source, event_key) DO NOTHING RETURNING id"
        ),
        {
            "source": source,
            "key": key,
            "payload": orjson.dumps(payload).decode(),
            "processed": processed,
        },
    ).first()
    return inserted is not None


def _conversation_for(conn: Connection, page_id: str, psid: str, at: dt.datetime | None) -> str:
    """The conversation of `psid` on `page_id`, created when the bulk sync has not seen it.

    Messenger events carry no thread id, so a new thread gets a deterministic placeholder id
    (`wh_<page>_<psid>`); later messages from the same person land in the same conversation.
    """
    existing = conn.execute(
        text(
            "SELECT id FROM conversations WHERE page_id = :page AND psid = :psid"
            " ORDER BY (id LIKE 'wh\\_%') , updated_time DESC NULLS LAST LIMIT 1"
        ),
        {"page": page_id, "psid": psid},
    ).scalar()
    conversation_id = existing or f"wh_{page_id}_{psid}"
    conn.execute(
        text(
            "INSERT INTO conversations (id, page_id, psid, updated_time, customer_id)"
            " VALUES (:id, :page, :psid, :at, (SELECT id FROM customers WHERE fb_psid = :psid))"
            " ON CONFLICT (id) DO UPDATE SET"
            "   updated_time = greatest(conversations.updated_time, EXCLUDED.updated_time),"
            "   customer_id = coalesce(conversations.customer_id, EXCLUDED.customer_id)"
            " WHERE conversations.updated_time IS DISTINCT FROM"
            "       greatest(conversations.updated_time, EXCLUDED.updated_time)"
            "    OR (conversations.customer_id IS NULL AND EXCLUDED.customer_id IS NOT NULL)"
        ),
        {"id": conversation_id, "page": page_id, "psid": psid, "at": at},
    )
    return conversation_id


def _store_message(conn: Connection, page_id: str, event: dict) -> None:
    message = event.get("message") or {}
    sender = _id(_get(event, "sender", "id"))
    recipient = _id(_get(event, "recipient", "id"))
    # An echo is the Page's own reply: the customer is then the recipient.
    psid = recipient if message.get("is_echo") else sender
    if not psid:
        return
    at = _from_unix(event.get("timestamp"), millis=True)
    conversation_id = _conversation_for(conn, page_id, psid, at)
    conn.execute(
        text(
            "INSERT INTO messages (id, conversation_id, from_id, text, created_time)"
            " VALUES (:id, :conversation, :from_id, :text, :at) ON CONFLICT (id) DO NOTHING"
        ),
        {
            "id": _id(message.get("mid")),
            "conversation": conversation_id,
            "from_id": sender,
            "text": message.get("text"),
            "at": at,
        },
    )


def ingest(conn: Connection, body: dict) -> dict[str, int]:
    """Store every event of one delivery; returns counts of stored and duplicate events."""
    stored = duplicates = ignored = 0
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise Problem(400, "Not a webhook notification", "The body has no `entry` list.")
    for entry in entries:
        if not isinstance(entry, dict):
            ignored += 1
            continue
        page_id = _id(entry.get("id"))
        for change in entry.get("changes") or []:
            if not isinstance(change, dict):
                ignored += 1
                continue
            value = change.get("value")
            if change.get("field") != "leadgen" or not isinstance(value, dict):
                ignored += 1
                continue
            leadgen_id = _id(value.get("leadgen_id"))
            if not leadgen_id:
                ignored += 1
                continue
            payload = {
                "leadgen_id": leadgen_id,
                "page_id": _id(value.get("page_id")) or page_id,
                "form_id": _id(value.get("form_id")),
                "ad_id": _id(value.get("ad_id") or value.get("adgroup_id")),
                "created_time": value.get("created_time"),
                "entry_time": entry.get("time"),
            }
            if _store(conn, "leadgen", leadgen_id, payload, processed=False):
                stored += 1
            else:
                duplicates += 1
        for event in entry.get("messaging") or []:
            message = event.get("message") if isinstance(event, dict) else None
            mid = _id(message.get("mid")) if isinstance(message, dict) else None
            if not mid or not page_id:
                ignored += 1  # reads, deliveries, postbacks: nothing to keep yet
                continue
            # Stored as processed: the rows are written right here, atomically with it.
            if _store(conn, "messages", mid, {"page_id": page_id, **event}, processed=True):
                _store_message(conn, page_id, event)
                stored += 1
            else:
                duplicates += 1
    return {"stored": stored, "duplicates": duplicates, "ignored": ignored}


@router.post(
    "/webhooks/facebook",
    summary="Receive signed Meta webhook events",
    responses={
        400: {"description": "malformed body"},
        401: {"description": "missing signature"},
        403: {"description": "invalid signature"},
        413: {"description": "body too large"},
        503: {"description": "database unavailable; Meta redelivers"},
    },
)
async def receive(request: Request) -> dict[str, int]:
    """Verify, store durably, acknowledge."""
    settings = request.app.state.settings
    if settings.app_secret is None:
        log.error("webhook refused: FB_APP_SECRET is not set, signatures cannot be checked")
        raise Problem(503, "Webhooks not configured", "The receiver has no app secret.")
    body = await request.body()
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise Problem(401, "Missing signature", f"The {SIGNATURE_HEADER} header is required.")
    if not verify_signature(body, header, settings.app_secret.reveal()):
        log.warning("webhook rejected: bad signature")
        raise Problem(403, "Invalid signature")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "Malformed JSON", "The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise Problem(400, "Not a webhook notification", "The body must be a JSON object.")
    if b"\\u0000" in body:  # jsonb cannot store U+0000; Meta never sends it
        raise Problem(400, "Unsupported content", "NUL characters are not accepted.")

    from starlette.concurrency import run_in_threadpool

    db = request.app.state.db

    def store() -> dict[str, int]:
        with db.begin() as conn:
            return ingest(conn, parsed)

    counts = await run_in_threadpool(store)
    log.info("webhook stored %(stored)d, duplicates %(duplicates)d", counts)
    return counts
