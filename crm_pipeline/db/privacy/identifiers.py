"""Erased identifiers as keyed hashes, and how a record is recognised as an erased person's.

An erasure keeps each identifier of the person (email, phone, PSID, leadgen id, conversation id)
only as HMAC-SHA256 keyed with `CRM_MASK_KEY` (table `erased_identifiers`). A record (a raw
Parquet row, a lead fetched from Meta, a webhook payload) is the erased person's when any of its
string values, nested JSON included, hashes to one of them. The match is on whole values, not on
substrings of free text: a message is recognised by its conversation or sender, not by what it
says. Rotating `CRM_MASK_KEY` makes earlier digests unrecognisable: keep the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, text

from crm_pipeline.config import load_settings

# The kinds of identifier kept for an erased person (`erased_identifiers.kind`).
EMAIL, PHONE, PSID, LEAD, CONVERSATION = "email", "phone", "psid", "lead", "conversation"
KINDS = (EMAIL, PHONE, PSID, LEAD, CONVERSATION)
ID_KINDS = (PSID, LEAD, CONVERSATION)  # Meta's ids: compared as they are
# A phone is its digits; fewer than this many digits is not specific enough to identify anyone.
MIN_PHONE_DIGITS = 7
_PHONE_SHAPE = re.compile(r"\+?[\d\s().\-/]+")
_NON_DIGITS = re.compile(r"\D")
# Nested JSON is walked at most this deep (a hostile payload cannot exhaust the stack).
_MAX_DEPTH = 32


def erasure_key(env: dict[str, str] | None = None) -> bytes:
    """The HMAC key: `CRM_MASK_KEY` (production refuses to run without it)."""
    return load_settings(env).effective_mask_key()


def phone_digits(value: str) -> str | None:
    """The digits of a phone number, or None when `value` is not shaped like one."""
    value = value.strip()
    if not _PHONE_SHAPE.fullmatch(value):
        return None
    digits = _NON_DIGITS.sub("", value)
    return digits if len(digits) >= MIN_PHONE_DIGITS else None


def normalise(kind: str, value: str) -> str | None:
    """The form of `value` that is hashed for `kind` (None: not an identifier of that kind)."""
    if kind == EMAIL:
        value = value.strip().lower()
        return value if "@" in value else None
    if kind == PHONE:
        return phone_digits(value)
    value = value.strip()
    return value or None


def digest(key: bytes, kind: str, value: str) -> str | None:
    """HMAC-SHA256 of the normalised `value` of `kind` (hex), or None when it is not one."""
    norm = normalise(kind, value)
    if norm is None:
        return None
    return hmac.new(key, f"{kind}:{norm}".encode(), hashlib.sha256).hexdigest()


def candidate_digests(key: bytes, value: str) -> Iterator[tuple[str, str]]:
    """(kind, digest) of every kind `value` could be an identifier of."""
    for kind in KINDS:
        found = digest(key, kind, value)
        if found is not None:
            yield kind, found


def string_leaves(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string inside `value` (dicts, lists, and strings holding JSON, walked)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        yield value
        if value[:1] in ("{", "["):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                return
            yield from string_leaves(parsed, depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from string_leaves(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from string_leaves(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        yield str(value)  # an id or a phone stored as a number


@dataclass(frozen=True)
class ErasedIdentifiers:
    """The digests of every erased identifier, and the key they were made with."""

    key: bytes
    digests: frozenset[str]

    @classmethod
    def load(cls, conn: Connection, key: bytes | None = None) -> ErasedIdentifiers:
        """Every erased identifier's digest, read in `conn`'s transaction."""
        rows = conn.execute(text("SELECT digest FROM erased_identifiers")).scalars()
        return cls(key or erasure_key(), frozenset(rows))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def matches(self, record: Any) -> bool:
        """Is `record` (a row, a payload, a value) about an erased person?"""
        if not self.digests:
            return False
        for leaf in string_leaves(record):
            for _kind, found in candidate_digests(self.key, leaf):
                if found in self.digests:
                    return True
        return False

    def keep(self, records: Iterable[Any]) -> tuple[list[Any], int]:
        """`records` without the erased people's, and how many were dropped."""
        records = list(records)
        kept = [r for r in records if not self.matches(r)]
        return kept, len(records) - len(kept)

    def keep_threads(
        self, conversations: Iterable[dict], messages: Iterable[dict]
    ) -> tuple[list[dict], list[dict], int]:
        """Conversations and messages without the erased people's; a message goes with its
        conversation (the Page's replies name no one). Returns both and how many were dropped."""
        conversations, messages = list(conversations), list(messages)
        kept = [c for c in conversations if not self.matches(c)]
        gone = {c.get("id") for c in conversations} - {c.get("id") for c in kept}
        kept_messages = [
            m for m in messages if m.get("conversation_id") not in gone and not self.matches(m)
        ]
        dropped = len(conversations) - len(kept) + len(messages) - len(kept_messages)
        return kept, kept_messages, dropped
