"""Cache-first GET routes: JSON files under `CRM_CACHE_DIR`, filled from the DB on a miss.

- HIT: the file is current; served with a strong ETag (If-None-Match gives 304).
- MISS: no file; built from one DB snapshot, written atomically, served.
- STALE: the file is past its TTL or behind the change log for the tables (and customer) it
  covers; served at once while one background refresh per key rebuilds it.
- DB down: every existing file is still served (STALE, with `X-Stale-Since`, the time the data
  was generated, and `X-Database-Unavailable-Since`); a miss answers 503.

Every answer says `Cache-Control: private, no-cache`: a browser may keep the file but asks
again each time, with the ETag, and gets a 304 while the file is current. The API already
knows cheaply whether a file is current, and a max-age would let a browser show data older than
a committed write.

A 404 (an id that does not exist) is remembered with the watermark of the snapshot that found
it absent, so asking again costs the batched change-log check instead of a build, until a
change for that id (its creation, say) appears.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import Response
from sqlalchemy import Connection, text

from crm_pipeline.api.auth import AUTH_RESPONSES, authenticate
from crm_pipeline.api.database import Database
from crm_pipeline.api.problems import DatabaseUnavailable, Problem
from crm_pipeline.cachefile import dumps, envelope, write_json_atomic
from crm_pipeline.db.changelog import reflected_watermark

log = logging.getLogger("crm_pipeline.api.cache")

# Misses built at once; the rest wait their turn. Each build thread competes with the event
# loop for the GIL and with PostgreSQL for the cores, so a burst of misses (a scan of random
# ids, say) would otherwise slow every hit down (benchmarks/api_reads.py measures it).
MAX_CONCURRENT_BUILDS = 2
MAX_REMEMBERED_ABSENT = 10_000  # remembered 404s, least recently used dropped first
CACHE_CONTROL = "private, no-cache"
CUSTOMER_ENTITIES = ("customers", "orders", "leads", "conversations", "messages")


@dataclass(frozen=True)
class CacheKey:
    """One cache file: where it lives, what it depends on and how to build it."""

    name: str
    path: str  # relative to the cache dir
    schema_version: int
    entities: tuple[str, ...]  # change_log entities that make it stale
    build: Callable[[Connection], dict[str, Any] | None]  # None: the resource does not exist
    customer_id: int | None = None  # only this customer's changes make it stale


@dataclass(frozen=True)
class Cached:
    body: bytes
    document: dict[str, Any]

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @property
    def generated_at(self) -> dt.datetime | None:
        try:
            return dt.datetime.fromisoformat(self.document["generated_at"])
        except (KeyError, TypeError, ValueError):
            return None

    def age_seconds(self) -> int:
        generated = self.generated_at
        if generated is None:
            return 0
        return max(0, int((dt.datetime.now(dt.UTC) - generated).total_seconds()))


# Per key: a change to one of its tables (and, for a customer's file, that customer) at or
# after the file's watermark. One row per stale key, numbered as passed.
_CHANGED_SINCE = """
SELECT k.n FROM unnest(CAST(:watermarks AS xid8[]), CAST(:entities AS text[]),
                       CAST(:customers AS bigint[])) WITH ORDINALITY AS k(watermark, entities,
                                                                          customer_id, n)
WHERE EXISTS (SELECT 1 FROM change_log c
              WHERE c.txid >= k.watermark AND c.entity = ANY(string_to_array(k.entities, ','))
                AND (k.customer_id IS NULL OR c.customer_id = k.customer_id))
"""


class ChangeChecks:
    """Is there a change newer than a file's watermark? Asked for many requests in one query.

    On a cache hit that question is the only database work, and asked once per request it
    costs a pooled connection and four round trips (ping, BEGIN, query, COMMIT) plus a worker
    thread: several times the rest of the hit. So requests wait on the event loop, and one
    query at a time (in a worker thread) answers every request that arrived before it started,
    as a group commit does. Each answer still comes from a snapshot taken after its request
    arrived, so a write committed before a read is always seen by that read: exactly what one
    query per request gives.

    The query runs on a thread of its own, not in the shared worker pool: when misses fill
    that pool with builds, hits must not queue behind them.
    """

    MAX_BATCH = 256

    def __init__(self, db: Database) -> None:
        self.db = db
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-check")
        self._lock = threading.Lock()
        # Futures belong to one event loop: one queue per loop (tests may run several).
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    async def changed_since(
        self, watermark: str, entities: tuple[str, ...], customer_id: int | None
    ) -> bool:
        """True when a change at or after `watermark` touches `entities` (and `customer_id`)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _LoopQueue()
        future: asyncio.Future[bool] = loop.create_future()
        queue.waiting.append((watermark, ",".join(entities), customer_id, future))
        if queue.task is None:
            queue.task = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _LoopQueue) -> None:
        try:
            while queue.waiting:
                batch = queue.waiting[: self.MAX_BATCH]
                del queue.waiting[: self.MAX_BATCH]
                try:
                    stale = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._query, [b[:3] for b in batch]
                    )
                except Exception as exc:  # every caller in the batch sees the failure
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (shutting down): nobody is left waiting
                    for *_, future in batch:
                        future.cancel()
                    raise
                for n, (*_, future) in enumerate(batch, start=1):
                    if not future.done():
                        future.set_result(n in stale)
        finally:
            queue.task = None
            for *_, future in queue.waiting:  # only when cancelled
                future.cancel()
            queue.waiting.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _query(self, keys: list[tuple[str, str, int | None]]) -> set[int]:
        params = {
            "watermarks": [k[0] for k in keys],
            "entities": [k[1] for k in keys],
            "customers": [k[2] for k in keys],
        }
        # One statement: its snapshot is taken when it starts, after every request it answers.
        return self.db.run_statement(
            lambda conn: set(conn.execute(text(_CHANGED_SINCE), params).scalars())
        )


@dataclass
class _LoopQueue:
    waiting: list[tuple[str, str, int | None, asyncio.Future[bool]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class CacheStore:
    """Reads, builds and refreshes cache files; one refresh per key at a time."""

    def __init__(
        self,
        cache_dir: Path,
        db: Database,
        ttl_seconds: int,
        max_remembered_absent: int = MAX_REMEMBERED_ABSENT,
        max_concurrent_builds: int = MAX_CONCURRENT_BUILDS,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.max_remembered_absent = max_remembered_absent
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-refresh")
        self._builders = ThreadPoolExecutor(
            max_workers=max_concurrent_builds,
            thread_name_prefix="cache-build",
        )
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        # Only keys with a build running or waiting have a lock: bounded by the worker threads.
        self._build_locks: dict[str, _KeyLock] = {}
        # key name -> (watermark of the snapshot that found it absent, when, monotonic)
        self._absent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._changes = ChangeChecks(db)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._builders.shutdown(wait=True, cancel_futures=True)
        self._changes.close()

    def read(self, key: CacheKey) -> Cached | None:
        path = self.cache_dir / key.path
        try:
            body = path.read_bytes()
            document = orjson.loads(body)
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            log.warning("unreadable cache file %s; rebuilding", key.path)
            return None
        if not isinstance(document, dict) or document.get("schema_version") != key.schema_version:
            return None  # written by another version of the code: rebuild
        return Cached(body, document)

    async def is_stale(self, key: CacheKey, cached: Cached) -> bool:
        """Past the TTL, or a change the file does not reflect exists (needs the DB)."""
        if cached.age_seconds() >= self.ttl_seconds:
            return True
        watermark = str(cached.document.get("watermark") or "0")
        if not watermark.isdigit():
            return True
        return await self._changes.changed_since(watermark, key.entities, key.customer_id)

    def build(self, key: CacheKey) -> Cached | None:
        """Build from one DB snapshot and publish atomically; None when the resource is absent."""
        with self._build_lock(key.name):
            with self.db.snapshot() as conn:
                payload = key.build(conn)
                watermark = reflected_watermark(conn)
            if payload is None:
                # Gone from the DB (e.g. a deleted customer): drop its file so it 404s too.
                (self.cache_dir / key.path).unlink(missing_ok=True)
                self._remember_absent(key.name, watermark)
                return None
            self._forget_absent(key.name)
            document = envelope(payload, watermark=watermark, schema_version=key.schema_version)
            try:
                write_json_atomic(self.cache_dir / key.path, document)
            except OSError as exc:
                log.error("could not write cache file %s: %s", key.path, type(exc).__name__)
            body = dumps(document)
            return Cached(body, orjson.loads(body))

    async def build_for_request(self, key: CacheKey) -> Cached | None:
        """`build` on one of the build threads (`max_concurrent_builds` at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self._builders, self.build, key)

    def refresh_in_background(self, key: CacheKey) -> bool:
        """Schedule one rebuild of `key` unless one is already running; True if scheduled."""
        with self._lock:
            if key.name in self._refreshing:
                return False
            self._refreshing.add(key.name)

        def run() -> None:
            try:
                self.build(key)
            except DatabaseUnavailable:
                log.warning("background refresh of %s skipped: database unavailable", key.name)
            except Exception:
                log.exception("background refresh of %s failed", key.name)
            finally:
                with self._lock:
                    self._refreshing.discard(key.name)

        try:
            self._executor.submit(run)
        except RuntimeError:  # shutting down
            with self._lock:
                self._refreshing.discard(key.name)
            return False
        return True

    def refreshing(self, name: str) -> bool:
        with self._lock:
            return name in self._refreshing

    async def known_absent(self, key: CacheKey) -> bool:
        """True when a build found `key` absent and no change since says otherwise.

        One batched change-log check (as for a hit) instead of a build. A remembered absence
        also expires with the TTL, as a file does.
        """
        with self._lock:
            entry = self._absent.get(key.name)
            if entry is None:
                return False
            self._absent.move_to_end(key.name)
        watermark, found_at = entry
        if time.monotonic() - found_at >= self.ttl_seconds:
            return False
        return not await self._changes.changed_since(watermark, key.entities, key.customer_id)

    def _remember_absent(self, name: str, watermark: str) -> None:
        with self._lock:
            self._absent[name] = (watermark, time.monotonic())
            self._absent.move_to_end(name)
            while len(self._absent) > self.max_remembered_absent:
                self._absent.popitem(last=False)

    def _forget_absent(self, name: str) -> None:
        with self._lock:
            self._absent.pop(name, None)

    @contextmanager
    def _build_lock(self, name: str) -> Iterator[None]:
        """One build per key at a time; the lock is dropped when nobody holds or awaits it."""
        with self._lock:
            entry = self._build_locks.get(name)
            if entry is None:
                entry = self._build_locks[name] = _KeyLock()
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._build_locks[name]


@dataclass
class _KeyLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holding or waiting


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in header.split(","))
    return etag in tags


async def serve(request: Request, key: CacheKey) -> Response:
    """The cache-first read path shared by every GET route.

    It runs on the event loop: a hit reads one small local file and awaits the batched
    change-log check, with no worker thread of its own; a miss builds in a worker thread.
    """
    store: CacheStore = request.app.state.cache
    db: Database = store.db
    cached = store.read(key)
    status = "HIT"
    extra: dict[str, str] = {}
    if cached is None:
        built = None
        if not await store.known_absent(key):  # a remembered 404 needs no build
            built = await store.build_for_request(key)  # DatabaseUnavailable → 503
        if built is None:
            raise Problem(
                404,
                "Not found",
                f"No {key.name.split(':')[0]} with that id.",
                headers={"Cache-Control": CACHE_CONTROL},
            )
        cached, status = built, "MISS"
    else:
        try:
            if await store.is_stale(key, cached):
                status = "STALE"
                store.refresh_in_background(key)
        except DatabaseUnavailable:
            status = "STALE"
            generated = cached.document.get("generated_at")
            if generated:
                extra["X-Stale-Since"] = str(generated)
            if db.down_since_iso():
                extra["X-Database-Unavailable-Since"] = db.down_since_iso()

    headers = {
        "X-Cache": status,
        "ETag": cached.etag,
        "Cache-Control": CACHE_CONTROL,
        "Age": str(cached.age_seconds()),
        **extra,
    }
    if _etag_matches(request.headers.get("if-none-match"), cached.etag):
        return Response(status_code=304, headers=headers)
    return Response(cached.body, media_type="application/json", headers=headers)


# --- the keys -------------------------------------------------------------------------------


def _customer_index_key() -> CacheKey:
    from crm_pipeline.defs.analytics.kpis import REVENUE_STATUSES
    from crm_pipeline.defs.cache import customers
    from crm_pipeline.defs.cache.assets import CUSTOMER_SCHEMA_VERSION

    return CacheKey(
        "customers",
        customers.INDEX_FILE,
        CUSTOMER_SCHEMA_VERSION,
        ("customers", "orders", "leads"),
        lambda conn: customers.build_index(conn, REVENUE_STATUSES),
    )


def _customer_key(customer_id: int) -> CacheKey:
    from crm_pipeline.defs.cache import customers
    from crm_pipeline.defs.cache.assets import CUSTOMER_SCHEMA_VERSION

    def build(conn: Connection) -> dict[str, Any] | None:
        # An unknown id (a typo, a scan) costs one indexed lookup, not the profile's queries.
        exists = conn.execute(_CUSTOMER_EXISTS, {"id": customer_id}).first()
        return customers.build_profiles(conn, [customer_id]).get(customer_id) if exists else None

    return CacheKey(
        f"customer:{customer_id}",
        f"{customers.PROFILE_DIR}/{customer_id}.json",
        CUSTOMER_SCHEMA_VERSION,
        CUSTOMER_ENTITIES,
        build,
        customer_id=customer_id,
    )


_CUSTOMER_EXISTS = text("SELECT 1 FROM customers WHERE id = :id")


def _summary_key() -> CacheKey:
    from crm_pipeline.defs.analytics.assets import SUMMARY_FILE, build_validated_summary
    from crm_pipeline.defs.analytics.kpis import SUMMARY_SCHEMA_VERSION

    return CacheKey(
        "summary",
        SUMMARY_FILE,
        SUMMARY_SCHEMA_VERSION,
        ("customers", "orders", "leads", "ad_insights_daily", "campaigns"),
        lambda conn: build_validated_summary(conn, dt.datetime.now(dt.UTC).date()),
    )


def _insights_key() -> CacheKey:
    from crm_pipeline.defs.cache.assets import (
        MARKETING_INSIGHTS_FILE,
        MARKETING_SCHEMA_VERSION,
        MarketingCacheConfig,
        build_marketing_insights,
    )

    days = MarketingCacheConfig().lookback_days

    def build(conn: Connection) -> dict[str, Any]:
        until = dt.datetime.now(dt.UTC).date()
        return build_marketing_insights(conn, until - dt.timedelta(days=days - 1), until)

    return CacheKey(
        "insights",
        MARKETING_INSIGHTS_FILE,
        MARKETING_SCHEMA_VERSION,
        ("ad_insights_daily", "campaigns"),
        build,
    )


router = APIRouter(tags=["reads"])

# Personal data (names, emails, phones, messages, lead answers) ...
_CUSTOMERS_READ = [Security(authenticate, scopes=["customers:read"])]
# ... and aggregates without personal data.
_ANALYTICS_READ = [Security(authenticate, scopes=["analytics:read"])]

_CACHED = {
    **AUTH_RESPONSES,
    200: {"description": "the cache file (X-Cache: HIT, MISS or STALE)"},
    304: {"description": "If-None-Match matched the ETag"},
    503: {"description": "no cached copy and the database is unavailable"},
}


@router.get(
    "/api/customers",
    responses=_CACHED,
    summary="Customer list (cache-first)",
    dependencies=_CUSTOMERS_READ,
)
async def customer_index(request: Request) -> Response:
    """`customers/index.json`."""
    return await serve(request, _customer_index_key())


@router.get(
    "/api/customers/{customer_id}",
    responses={**_CACHED, 404: {"description": "no such customer"}},
    summary="Customer 360 (cache-first)",
    dependencies=_CUSTOMERS_READ,
)
async def customer_profile(
    request: Request, customer_id: int = PathParam(ge=1, le=2**63 - 1)
) -> Response:
    """`customers/<id>.json`."""
    return await serve(request, _customer_key(customer_id))


@router.get(
    "/api/analytics/summary",
    responses=_CACHED,
    summary="KPI summary (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def analytics_summary(request: Request) -> Response:
    """`analytics/summary.json`."""
    return await serve(request, _summary_key())


@router.get(
    "/api/marketing/insights",
    responses=_CACHED,
    summary="Ad insights (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def marketing_insights(request: Request) -> Response:
    """`marketing/insights.json`."""
    return await serve(request, _insights_key())


def preload() -> None:
    """Import what the keys import lazily (Dagster and the builders, over a second), so that
    happens at startup and not on the event loop inside the first request."""
    _customer_index_key()
    _customer_key(1)
    _summary_key()
    _insights_key()
