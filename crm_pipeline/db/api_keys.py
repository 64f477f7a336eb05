"""API keys: issue, list and revoke them; only a SHA-256 of each key is ever stored.

A key is `crm_` followed by 43 URL-safe characters of 256 random bits. It is shown once, when
created. Keys are high-entropy secrets, so a plain SHA-256 is the right hash: there is nothing
for a slow password hash to protect against, and checking stays a dict lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from sqlalchemy import Connection, text

KEY_PREFIX = "crm_"
CHANNEL = "crm_api_keys"  # notified by a trigger when keys are added, changed or revoked
SCOPES = ("customers:read", "analytics:read", "crm:write", "privacy:erase")
_SHOWN_PREFIX = 8  # `crm_` and four characters: enough to tell keys apart in a list


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked; the message is safe to print."""


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key itself or its hash."""

    name: str
    key_prefix: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class ActiveKey:
    """A key the API accepts, as held in memory."""

    id: int
    name: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    """The stored form of a key (hex SHA-256)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(raw: str | Iterable[str]) -> tuple[str, ...]:
    """Validate scopes (comma-separated or a list); unknown ones are an error naming them."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ApiKeyError(f"give at least one scope: {', '.join(SCOPES)}")
    return scopes


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() or not c.isprintable() for c in name):
        raise ApiKeyError("a key name is 1-100 printable characters without spaces")
    return name


def create_key(conn: Connection, name: str, scopes: str | Iterable[str]) -> str:
    """Store a new key named `name` with `scopes`; return the key (the only time it exists)."""
    name = _check_name(name)
    scope_list = list(parse_scopes(scopes))
    exists = conn.execute(
        text("SELECT 1 FROM api_keys WHERE name = :name AND revoked_at IS NULL"), {"name": name}
    ).first()
    if exists:
        raise ApiKeyError(f"an active key named {name!r} exists; revoke it first")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        text(
            "INSERT INTO api_keys (name, key_prefix, key_hash, scopes)"
            " VALUES (:name, :prefix, :hash, :scopes)"
        ),
        {"name": name, "prefix": key[:_SHOWN_PREFIX], "hash": hash_key(key), "scopes": scope_list},
    )
    return key


def list_keys(conn: Connection) -> list[ApiKeyInfo]:
    """Every key, active and revoked, newest first."""
    rows = conn.execute(
        text(
            "SELECT name, key_prefix, scopes, created_at, last_used_at, revoked_at"
            " FROM api_keys ORDER BY created_at DESC, id DESC"
        )
    )
    return [
        ApiKeyInfo(
            r.name, r.key_prefix, tuple(r.scopes), r.created_at, r.last_used_at, r.revoked_at
        )
        for r in rows
    ]


def revoke_key(conn: Connection, name: str) -> int:
    """Revoke the active key named `name`; the number revoked (0: none was active)."""
    return conn.execute(
        text("UPDATE api_keys SET revoked_at = now() WHERE name = :name AND revoked_at IS NULL"),
        {"name": name.strip()},
    ).rowcount


# The API's key ring reads and records these on its own LISTEN connection (plain psycopg).


def active_keys(conn: psycopg.Connection) -> dict[str, ActiveKey]:
    """Every unrevoked key, by hash: what the API holds in memory."""
    rows = conn.execute(
        "SELECT id, key_hash, name, scopes FROM api_keys WHERE revoked_at IS NULL"
    ).fetchall()
    return {key_hash: ActiveKey(i, name, frozenset(scopes)) for i, key_hash, name, scopes in rows}


def touch_keys(conn: psycopg.Connection, ids: Iterable[int]) -> None:
    """Record that keys were used (batched by the API; not a trigger of a key reload)."""
    ids = sorted(set(ids))
    if ids:
        conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = ANY(%s)", [ids])
