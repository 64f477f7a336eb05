"""API keys on every `/api/` route: `Authorization: Bearer <key>`, checked against scopes.

Checking a key must not cost a database round trip (a cache hit needs none), so each process
holds the active keys' hashes in memory (`KeyRing`). A listener thread LISTENs on the channel a
trigger on `api_keys` notifies, and reloads within milliseconds of a key being created, revoked
or changed; it also reloads every `FULL_RELOAD_SECONDS` in case a notification was lost with a
connection. While the database is unreachable the last known keys stay in force, and a process
that starts during an outage takes them from the snapshot the last load left in the data
folder (hashes only, owner-readable only), so cached reads keep being served to known clients.

`last_used_at` is recorded in batches by the same thread, never on the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from crm_pipeline.api.pg_listener import PgListener
from crm_pipeline.api.problems import Problem
from crm_pipeline.atomic import write_bytes_atomic
from crm_pipeline.db import api_keys
from crm_pipeline.db.api_keys import ActiveKey, hash_key

log = logging.getLogger("crm_pipeline.api.auth")

FULL_RELOAD_SECONDS = 60.0
TOUCH_SECONDS = 10.0  # how often last_used_at is written
RETRY_SECONDS = 1.0  # between attempts, without backoff: keys changed in an outage apply soon
APPLICATION_NAME = "crm-pipeline-api-keys"  # how the listener shows in pg_stat_activity
ACTOR_PREFIX = "api_key:"

bearer = HTTPBearer(
    scheme_name="ApiKey",
    bearerFormat="crm_…",
    description=(
        "An API key from `crm-pipeline api-keys create --name NAME --scopes S1,S2`, sent as "
        "`Authorization: Bearer <key>`. Each operation lists the scope it needs."
    ),
    auto_error=False,
)


# Documented on every route that needs a key (the OpenAPI document shows them).
AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"description": "no API key, or an unknown or revoked one (`WWW-Authenticate: Bearer`)"},
    403: {"description": "the API key lacks this route's scope"},
}


class KeyRing:
    """The active API keys of this process, by hash, kept current by a listener thread."""

    def __init__(self, conninfo: Callable[[], str], snapshot: Path | None = None) -> None:
        self._snapshot = snapshot
        self._keys: dict[str, ActiveKey] = {}
        self._used: set[int] = set()
        self._used_lock = threading.Lock()
        self._last_full = self._last_touch = 0.0  # monotonic: the last full reload, last touch
        self._listener = PgListener(
            api_keys.CHANNEL,
            conninfo,
            name="api-keys",
            application_name=APPLICATION_NAME,
            on_connect=self._connected,
            on_wake=self._wake,
            on_stop=self._touch,  # the uses since the last batch
            on_outage=self._report_outage,
            on_recovery=_report_recovery,
            retry_seconds=RETRY_SECONDS,
            max_retry_seconds=RETRY_SECONDS,
        )

    def lookup(self, key: str) -> ActiveKey | None:
        """The active key `key`, or None (unknown or revoked). No I/O."""
        return self._keys.get(hash_key(key))

    def count(self) -> int:
        """How many active keys this process knows."""
        return len(self._keys)

    def mark_used(self, key: ActiveKey) -> None:
        """Note a use of `key`; the listener thread records it in the next batch."""
        with self._used_lock:
            self._used.add(key.id)

    def start(self, wait_seconds: float = 5.0) -> None:
        """Start the listener and wait (bounded) for its first load, so startup sees the keys."""
        self._listener.start(wait_seconds)

    def stop(self) -> None:
        """Stop the listener, recording the last uses first."""
        self._listener.stop()

    def _connected(self, conn: psycopg.Connection) -> None:
        self._load(conn)  # after LISTEN: a change between the two is not missed
        self._last_full = self._last_touch = time.monotonic()

    def _wake(self, conn: psycopg.Connection, notifies: list[psycopg.Notify]) -> None:
        now = time.monotonic()
        if notifies or now - self._last_full >= FULL_RELOAD_SECONDS:
            self._load(conn)
            self._last_full = now
        if now - self._last_touch >= TOUCH_SECONDS:
            self._touch(conn)
            self._last_touch = now

    def _load(self, conn: psycopg.Connection) -> None:
        keys = api_keys.active_keys(conn)
        # The first load always writes the snapshot: it replaces what an older process left.
        if keys != self._keys or not self._listener.ready.is_set():
            self._keys = keys
            self._save_snapshot()

    def _report_outage(self, exc: Exception) -> None:
        log.warning(
            "API keys cannot be refreshed (%s); the %d known keys stay in force",
            type(exc).__name__,
            len(self._keys),
        )
        if not self._listener.ready.is_set():  # starting during an outage
            self._load_snapshot()

    def _save_snapshot(self) -> None:
        if self._snapshot is None:
            return
        document = [
            {"id": k.id, "hash": h, "name": k.name, "scopes": sorted(k.scopes)}
            for h, k in sorted(self._keys.items())
        ]
        try:
            write_bytes_atomic(self._snapshot, orjson.dumps(document), mode=0o600)
        except OSError as exc:
            log.warning("could not save the API key snapshot: %s", type(exc).__name__)

    def _load_snapshot(self) -> None:
        if self._snapshot is None or self._keys:
            return
        try:
            document = orjson.loads(self._snapshot.read_bytes())
            self._keys = {
                d["hash"]: ActiveKey(d["id"], d["name"], frozenset(d["scopes"])) for d in document
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable API key snapshot: %s", type(exc).__name__)
            return
        log.warning(
            "database unreachable: using %d API keys from the last snapshot", len(self._keys)
        )

    def _touch(self, conn: psycopg.Connection) -> None:
        with self._used_lock:
            used, self._used = self._used, set()
        api_keys.touch_keys(conn, used)


def _report_recovery() -> None:
    log.info("API keys reloaded; database reachable again")


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="crm-pipeline"' + (f', error="{error}"' if error else "")
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


async def authenticate(
    request: Request,
    security_scopes: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ActiveKey:
    """The request's API key, which must hold every scope the route declares."""
    if credentials is None:
        raise _unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    keyring: KeyRing = request.app.state.keys
    key = keyring.lookup(credentials.credentials)
    if key is None:
        raise _unauthorized("The API key is unknown or revoked.", "invalid_token")
    missing = [s for s in security_scopes.scopes if s not in key.scopes]
    if missing:
        needed = " ".join(security_scopes.scopes)
        raise Problem(
            403,
            "Forbidden",
            f"This API key lacks the scope {', '.join(missing)}.",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    keyring.mark_used(key)
    request.state.api_key = key
    return key


def actor(request: Request) -> str:
    """How change rows name the writer of this request: `api_key:<name>`."""
    return ACTOR_PREFIX + request.state.api_key.name
