"""Erasing one person's rows from the database, in one transaction, and recording it.

What happens to each table (docs/privacy.md says the same to users):
- `messages` of their conversations (and any they sent), `conversations`, `leads`: deleted;
- `webhook_inbox` events about them (by leadgen id, message id, or a PSID, email or phone of
  theirs in the payload): deleted, pending ones included (they would bring the person back);
- `customers`: deleted, unless orders reference them: then kept, for accounting, with name,
  email, phone and PSID set to NULL (the orders keep their customer link; orders hold no
  personal fields of their own);
- `erasures` gets one row (the kind of selector, when, who, the counts; never the values) and
  `erased_identifiers` the keyed hashes of their identifiers, so later syncs drop them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from crm_pipeline.db.privacy.identifiers import digest
from crm_pipeline.db.privacy.person import Person

_DELETE_MESSAGES = text(
    "DELETE FROM messages WHERE conversation_id = ANY(:conversation_ids) OR from_id = ANY(:psids)"
    " RETURNING id"
)
_DELETE_CONVERSATIONS = text("DELETE FROM conversations WHERE id = ANY(:conversation_ids)")
_DELETE_LEADS = text("DELETE FROM leads WHERE id = ANY(:lead_ids)")
# Inbox payloads are Meta's JSON: an identifier appears there as a whole JSON string.
_DELETE_INBOX = text(
    "DELETE FROM webhook_inbox WHERE event_key = ANY(:keys)"
    " OR lower(payload::text) LIKE ANY(:patterns)"
)
_WITH_ORDERS = text("SELECT DISTINCT customer_id FROM orders WHERE customer_id = ANY(:ids)")
# A customer kept for their orders keeps its id and tier; these become NULL.
ANONYMISED_CUSTOMER_COLUMNS = ("name", "email", "phone", "fb_psid")
# The tables whose rows about the person are deleted outright.
DELETED_TABLES = ("leads", "conversations", "messages", "webhook_inbox")
_ANONYMISE = text(
    "UPDATE customers SET "
    + ", ".join(f"{c} = NULL" for c in ANONYMISED_CUSTOMER_COLUMNS)
    + ", updated_at = now() WHERE id = ANY(:ids)"
)
_DELETE_CUSTOMERS = text("DELETE FROM customers WHERE id = ANY(:ids)")
_RECORD = text(
    "INSERT INTO erasures (selector, actor, counts) VALUES (:selector, :actor, CAST(:counts AS"
    " jsonb)) RETURNING id"
)
_REMEMBER = text(
    "INSERT INTO erased_identifiers (kind, digest, erasure_id) VALUES (:kind, :digest, :erasure)"
    " ON CONFLICT (kind, digest) DO NOTHING"
)


@dataclass
class RowCounts:
    """How many rows of each table an erasure deleted or anonymised."""

    customers_deleted: int = 0
    customers_anonymised: int = 0
    leads: int = 0
    conversations: int = 0
    messages: int = 0
    inbox_events: int = 0
    identifiers: int = 0
    anonymised_ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


def _like_patterns(person: Person) -> list[str]:
    """`LIKE` patterns of the person's identifiers as whole JSON strings, lower-cased."""
    values = person.emails | person.psids | person.lead_ids | person.conversation_ids
    values |= person.phone_forms
    return sorted(f'%"{_escape_like(v.lower())}"%' for v in values)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def delete_rows(conn: Connection, person: Person) -> RowCounts:
    """Delete or anonymise every row of `person` inside `conn`'s transaction."""
    params = person.params()
    counts = RowCounts()
    mids = conn.execute(_DELETE_MESSAGES, params).scalars().all()
    counts.messages = len(mids)
    counts.conversations = conn.execute(_DELETE_CONVERSATIONS, params).rowcount
    counts.leads = conn.execute(_DELETE_LEADS, params).rowcount
    keys = sorted(person.lead_ids | set(mids))
    counts.inbox_events = conn.execute(
        _DELETE_INBOX, {"keys": keys, "patterns": _like_patterns(person)}
    ).rowcount
    ids = sorted(person.customer_ids)
    kept = sorted(conn.execute(_WITH_ORDERS, {"ids": ids}).scalars())
    if kept:
        counts.customers_anonymised = conn.execute(_ANONYMISE, {"ids": kept}).rowcount
        counts.anonymised_ids = kept
    gone = sorted(set(ids) - set(kept))
    if gone:
        counts.customers_deleted = conn.execute(_DELETE_CUSTOMERS, {"ids": gone}).rowcount
    return counts


def record_erasure(
    conn: Connection, person: Person, selector: str, actor: str, counts: dict, key: bytes
) -> int:
    """Record the erasure and remember the person's identifiers as keyed hashes; its id."""
    erasure = conn.execute(
        _RECORD, {"selector": selector, "actor": actor, "counts": json.dumps(counts)}
    ).scalar_one()
    rows = [
        {"kind": kind, "digest": found, "erasure": erasure}
        for kind, values in person.identifiers().items()
        for value in sorted(values)
        if (found := digest(key, kind, value)) is not None
    ]
    if rows:
        conn.execute(_REMEMBER, rows)
    return erasure


def update_counts(conn: Connection, erasure: int, counts: dict) -> None:
    """Add the later steps' counts (raw files, cache files) to an erasure's record."""
    conn.execute(
        text("UPDATE erasures SET counts = counts || CAST(:c AS jsonb) WHERE id = :id"),
        {"c": json.dumps(counts), "id": erasure},
    )
