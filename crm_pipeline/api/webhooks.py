"""Meta webhooks: the subscription handshake and signed event delivery.

POST bodies are verified against `X-Hub-Signature-256` (HMAC-SHA256 of the exact raw bytes with
the app secret, compared in constant time) before anything is parsed or stored. Each event is
written to `webhook_inbox` under a natural key (leadgen id, message mid) so Meta's redeliveries
are no-ops. The handler never calls the Graph API: leadgen events are enriched later by the
`webhook_leads` Dagster asset; Messenger events carry everything needed, so they become
`conversations`/`messages` rows here, in the same transaction as their inbox row.

A signed delivery never fails as a whole (design invariant 11). Each entry is validated on its
own (`crm_pipeline.api.webhook_models`) and written in its own savepoint; a malformed entry, or
one the database refuses, is kept in `webhook_inbox` as rejected (`rejected_at`, `processed_at`
and a short `error` set, keyed by a hash of its content so redeliveries dedupe) while the good
entries are stored and the delivery is acknowledged with 200. Only a body that is not JSON is a
400; a database that is unreachable or failing is a 503, so Meta redelivers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from crm_pipeline.api.problems import Problem
from crm_pipeline.api.webhook_models import (
    MAX_DEPTH,
    Delivery,
    Entry,
    MessageEvent,
    WebhookAck,
    nul_location,
    reason,
    storable,
    too_deep,
)

log = logging.getLogger("crm_pipeline.api.webhooks")

router = APIRouter(tags=["webhooks"])

SIGNATURE_HEADER = "X-Hub-Signature-256"
WEBHOOK_ACTOR = "webhook:facebook"


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


class ConversationClash(Exception):
    """The placeholder id of a (page, PSID) conversation is taken by another page or person."""


@dataclass(frozen=True)
class Verdict:
    """What one entry of a delivery (or a whole malformed body) becomes."""

    kind: str  # the inbox source it looks like: leadgen, messages or unknown
    raw: Any  # as received
    entry: Entry | None = None  # set when the entry is well formed
    reason: str | None = None  # set when it is rejected
    depth_limit: int = MAX_DEPTH


def _kind(raw: Any) -> str:
    if isinstance(raw, dict):
        if "messaging" in raw:
            return "messages"
        changes = raw.get("changes")
        if isinstance(changes, list) and any(
            isinstance(c, dict) and c.get("field") == "leadgen" for c in changes
        ):
            return "leadgen"
    return "unknown"


_NOT_OUR_PAGE = "entry.id: not a page this receiver serves (FB_PAGE_ID, FB_PAGE_IDS)"


def _review_entry(raw: Any, object_ok: bool, pages: frozenset[str]) -> Verdict:
    kind = _kind(raw)
    if too_deep(raw):
        return Verdict(kind, raw, reason=f"entry: nested deeper than {MAX_DEPTH} levels")
    if not object_ok:
        return Verdict(kind, raw, reason="object: must be 'page'")
    nul = nul_location(raw, "entry")
    if nul:
        return Verdict(kind, raw, reason=f"{nul}: contains U+0000, which cannot be stored")
    try:
        entry = Entry.model_validate(raw)
    except ValidationError as exc:
        return Verdict(kind, raw, reason=reason(exc, "entry"))
    mismatch = entry.page_mismatch()
    if mismatch:
        return Verdict(kind, raw, reason=mismatch)
    if pages and entry.id not in pages:
        return Verdict(kind, raw, reason=_NOT_OUR_PAGE)
    return Verdict(kind, raw, entry=entry)


def review(body: Any, pages: frozenset[str] = frozenset()) -> list[Verdict]:
    """Validate a parsed delivery entry by entry, without the database.

    A body that is not a notification at all (no `entry` list) is one rejected verdict. With
    `pages`, entries of any other page are rejected; without, every page is accepted.
    """
    try:
        delivery = Delivery.model_validate(body)
    except ValidationError as exc:
        return [Verdict("unknown", body, reason=reason(exc, "body"), depth_limit=MAX_DEPTH + 2)]
    object_ok = delivery.object == "page"
    return [_review_entry(raw, object_ok, pages) for raw in delivery.entry]


def _store(
    conn: Connection,
    source: str,
    key: str,
    payload: Any,
    *,
    processed: bool = False,
    error: str | None = None,
) -> bool:
    """Insert one inbox row; False when Meta already delivered it (same source and key).

    A row with an `error` is a rejected entry: processed and rejected at once, never claimed.
    """
    inserted = conn.execute(
        text(
            "INSERT INTO webhook_inbox (source, event_key, payload, processed_at, rejected_at,"
            "                           error)"
            " VALUES (:source, :key, CAST(:payload AS jsonb),"
            "         CASE WHEN :processed THEN now() END, CASE WHEN :rejected THEN now() END,"
            "         :error)"
            " ON CONFLICT (source, event_key) DO NOTHING RETURNING id"
        ),
        {
            "source": source,
            "key": key,
            "payload": orjson.dumps(payload).decode(),
            "processed": processed or error is not None,
            "rejected": error is not None,
            "error": error,
        },
    ).first()
    return inserted is not None


def _store_rejected(conn: Connection, verdict: Verdict, why: str) -> bool:
    """Keep a rejected entry (NULs removed, cut at the depth limit) under a key of its content.

    The key is the SHA-256 of the entry's canonical JSON, so Meta's redeliveries of the same
    poison are duplicates. An entry too deep to serialise is keyed by what is stored.
    """
    payload = storable(verdict.raw, verdict.depth_limit)
    try:
        canonical = orjson.dumps(verdict.raw, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    key = "rejected:" + hashlib.sha256(canonical).hexdigest()
    return _store(conn, verdict.kind, key, payload, error=why)


def _conversation_for(conn: Connection, page_id: str, psid: str, at: dt.datetime) -> str:
    """The conversation of `psid` on `page_id`, created when the bulk sync has not seen it.

    Messenger events carry no thread id, so a new thread gets a deterministic placeholder id
    (`wh_<page>_<psid>`); later messages from the same person land in the same conversation.
    PSIDs are page-scoped: a conversation is only ever found by its page and PSID together.
    """
    existing = conn.execute(
        text(
            "SELECT id FROM conversations WHERE page_id = :page AND psid = :psid"
            " ORDER BY (id LIKE 'wh\\_%') , updated_time DESC NULLS LAST LIMIT 1"
        ),
        {"page": page_id, "psid": psid},
    ).scalar()
    conversation_id = existing or f"wh_{page_id}_{psid}"
    if existing is None:
        taken = conn.execute(
            text("SELECT 1 FROM conversations WHERE id = :id"), {"id": conversation_id}
        ).first()
        if taken:  # written by someone else for another page or person: never merge into it
            raise ConversationClash
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


def _store_message(conn: Connection, page_id: str, event: MessageEvent) -> None:
    message = event.message
    # An echo is the Page's own reply: the customer is then the recipient.
    psid = event.recipient.id if message.is_echo else event.sender.id
    at = dt.datetime.fromtimestamp(event.timestamp / 1000, dt.UTC)
    conversation_id = _conversation_for(conn, page_id, psid, at)
    conn.execute(
        text(
            "INSERT INTO messages (id, conversation_id, from_id, text, created_time)"
            " VALUES (:id, :conversation, :from_id, :text, :at) ON CONFLICT (id) DO NOTHING"
        ),
        {
            "id": message.mid,
            "conversation": conversation_id,
            "from_id": event.sender.id,
            "text": message.text,
            "at": at,
        },
    )


def _store_entry(conn: Connection, entry: Entry, raw: dict, counts: dict[str, int]) -> None:
    """Store the events of one well-formed entry; raises when the database refuses one."""
    page_id = entry.id
    for _, change in entry.leadgen():
        value = change.value
        payload = {
            "leadgen_id": value.leadgen_id,
            "page_id": value.page_id or page_id,
            "form_id": value.form_id,
            "ad_id": value.ad_id or value.adgroup_id,
            "created_time": value.created_time,
            "entry_time": entry.time,
        }
        new = _store(conn, "leadgen", value.leadgen_id, payload)
        counts["stored" if new else "duplicates"] += 1
    for index, event in entry.messages():
        # Stored as processed: the rows are written right here, atomically with it.
        payload = {**raw["messaging"][index], "page_id": page_id}
        if _store(conn, "messages", event.message.mid, payload, processed=True):
            _store_message(conn, page_id, event)
            counts["stored"] += 1
        else:
            counts["duplicates"] += 1
    counts["ignored"] += entry.ignored()  # other changes; reads, deliveries, postbacks


def _error_name(exc: BaseException) -> str:
    """The class (and SQLSTATE) of an error: never its message, which may quote row values."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return type(exc).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    return f"{type(orig).__name__}, SQLSTATE {sqlstate}" if sqlstate else type(orig).__name__


def ingest(conn: Connection, body: Any, pages: frozenset[str] = frozenset()) -> dict[str, int]:
    """Store every entry of one parsed delivery inside `conn`'s transaction; returns counts.

    Each well-formed entry is written in its own savepoint: when the database refuses it
    (a constraint, a bad value) only that entry is rolled back, and it is kept as rejected like
    a malformed one. A database in trouble (unreachable, deadlock, timeout) fails the delivery,
    so Meta redelivers it.
    """
    counts = {"stored": 0, "duplicates": 0, "ignored": 0, "rejected": 0}
    for verdict in review(body, pages):
        why = verdict.reason
        if verdict.entry is not None:
            entry_counts = dict.fromkeys(counts, 0)
            try:
                with conn.begin_nested():
                    _store_entry(conn, verdict.entry, verdict.raw, entry_counts)
            except (OperationalError, InterfaceError):
                raise
            except ConversationClash:
                why = "entry.messaging: the conversation id is taken by another page or person"
            except Exception as exc:  # one entry's failure never sinks the others
                why = f"entry: the database refused it ({_error_name(exc)})"
            else:
                for name, number in entry_counts.items():
                    counts[name] += number
                continue
        counts["rejected" if _store_rejected(conn, verdict, why) else "duplicates"] += 1
    return counts


@router.post(
    "/webhooks/facebook",
    summary="Receive signed Meta webhook events",
    response_model=WebhookAck,
    responses={
        400: {"description": "not JSON"},
        401: {"description": "missing signature"},
        403: {"description": "invalid signature"},
        413: {"description": "body too large"},
        503: {"description": "database unavailable or failing; Meta redelivers"},
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

    db = request.app.state.db
    # FB_PAGE_ID and FB_PAGE_IDS together: an entry of any configured page is ours.
    pages = frozenset(settings.all_page_ids)

    def store() -> dict[str, int]:
        with db.begin(actor=WEBHOOK_ACTOR) as conn:  # change rows name Meta's webhook
            return ingest(conn, parsed, pages)

    try:
        counts = await run_in_threadpool(store)
    except DBAPIError as exc:  # not an outage (that is DatabaseUnavailable), yet nothing kept
        log.error("webhook delivery not stored: %s", _error_name(exc))
        raise Problem(
            503,
            "Webhook not stored",
            "The database failed; nothing was kept. Meta redelivers.",
            headers={"Retry-After": "5"},
        ) from None
    # Counts only: entries carry names, texts and contact data.
    log.log(
        logging.WARNING if counts["rejected"] else logging.INFO,
        "webhook delivery: %(stored)d stored, %(duplicates)d duplicates, %(ignored)d ignored,"
        " %(rejected)d rejected",
        counts,
    )
    return counts
