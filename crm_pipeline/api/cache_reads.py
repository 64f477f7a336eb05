"""Cache-first GET routes: JSON files under `CRM_CACHE_DIR`, filled from the DB on a miss.

- HIT: the file is current; served with a strong ETag (If-None-Match gives 304).
- MISS: no file; built from one DB snapshot, written atomically, served. Also a file made stale
  by a write this process made (an API write route): rebuilt for that request, so a client
  reads its own writes at once.
- STALE: the file is past its TTL or behind the change log for the tables (and customer) it
  covers; served at once while one background refresh per key rebuilds it.
- DB down: every existing file is still served (STALE, with `X-Stale-Since`, the time the data
  was generated, and `X-Database-Unavailable-Since`); a miss answers 503.

Every answer says `Cache-Control: private, no-cache`: a browser may keep the file but asks
again each time, with the ETag, and gets a 304 while the file is current. The API already
knows cheaply whether a file is current, and a max-age would let a browser show data older than
a committed write.

Is a file current? Answered without the database whenever possible. The process's change
listener (`change_listener.py`) keeps the recent changes in memory (`RecentChanges`) with a
coverage floor C: a file whose threshold is at least C is judged by memory alone, with no SQL.
A file's threshold is its watermark W, raised to U once a change-log check (or this process's
own build) has shown that no relevant change exists below U. Below the floor, or while the
listener is disconnected, one batched change-log query (`ChangeChecks`) answers instead, and
its snapshot's xmin is remembered as U so the next hits of that file need memory only. A write
by another client is therefore seen by hits as soon as its notification is processed
(milliseconds); a write through this process, at once.

A 404 (an id that does not exist) is remembered with the threshold of the snapshot that found
it absent, so asking again costs no build (and usually no query), until a change for that id
(its creation, say) appears.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import os
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
from crm_pipeline.cache import registry
from crm_pipeline.cache.publish import publish_document, remove
from crm_pipeline.cache.recent_changes import RecentChanges
from crm_pipeline.cachefile import dumps, envelope
from crm_pipeline.db.changelog import reflected_watermark, safe_upper_bound

log = logging.getLogger("crm_pipeline.api.cache")

# Misses built at once; the rest wait their turn. Each build thread competes with the event
# loop for the GIL and with PostgreSQL for the cores, so a burst of misses (a scan of random
# ids, say) would otherwise slow every hit down (benchmarks/api_reads.py measures it).
MAX_CONCURRENT_BUILDS = 2
MAX_REMEMBERED_BYTES = 64 * 1024 * 1024  # cache files kept in memory (stat-checked)
MAX_REMEMBERED_ABSENT = 10_000  # remembered 404s, least recently used dropped first
MAX_VERIFIED = 100_000  # files remembered as checked (a few dozen bytes each), LRU
CACHE_CONTROL = "private, no-cache"

# What `CacheStore.freshness` says about a cached file.
CURRENT = "current"
STALE = "stale"  # serve it, refresh in the background
OWN_WRITE = "own-write"  # stale because of a write of this process: rebuild for this request


@dataclass(frozen=True)
class CacheKey:
    """One cache file: where it lives, what it depends on and how to build it."""

    name: str
    path: str  # relative to the cache dir
    schema_version: int
    entities: tuple[str, ...]  # change_log entities that make it stale
    build: Callable[[Connection], dict[str, Any] | None]  # None: the resource does not exist
    customer_id: int | None = None  # only this customer's changes make it stale ...
    shared: tuple[str, ...] = ()  # ... and changes to these tables (read for every customer)


@dataclass(frozen=True)
class Cached:
    body: bytes
    document: dict[str, Any]

    @functools.cached_property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @functools.cached_property
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


# Per key: a change to one of its tables at or after the file's watermark; for a customer's
# file, only a change naming that customer, to a table every customer's file reads (`shared`),
# or a TRUNCATE. The numbers of the stale keys (as passed), and the snapshot's xmin: every
# transaction below it has finished, so a key found current has no relevant change below it.
_CHANGED_SINCE = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS upto, ARRAY(
  SELECT k.n FROM unnest(CAST(:watermarks AS xid8[]), CAST(:entities AS text[]),
                         CAST(:customers AS bigint[]), CAST(:shared AS text[]))
       WITH ORDINALITY AS k(watermark, entities, customer_id, shared, n)
  WHERE EXISTS (SELECT 1 FROM change_log c
                WHERE c.txid >= k.watermark AND c.entity = ANY(string_to_array(k.entities, ','))
                  AND (k.customer_id IS NULL OR c.customer_id = k.customer_id
                       OR c.op = 'truncate' OR c.entity = ANY(string_to_array(k.shared, ','))))
) AS stale
"""


class ChangeChecks:
    """Is there a change newer than a file's watermark? Asked for many requests in one query.

    The fallback for hits memory cannot answer (`RecentChanges`: listener down, or a file older
    than its coverage floor). There that question is the only database work, and asked once
    per request it costs a pooled connection and four round trips (ping, BEGIN, query, COMMIT)
    plus a worker thread: several times the rest of the hit. So requests wait on the event
    loop, and one query at a time (in a worker thread) answers every request that arrived
    before it started, as a group commit does. Each answer still comes from a snapshot taken
    after its request arrived, so a write committed before a read is always seen by that read:
    exactly what one query per request gives.

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
        self,
        watermark: str,
        entities: tuple[str, ...],
        customer_id: int | None,
        shared: tuple[str, ...] = (),
    ) -> tuple[bool, int]:
        """(stale, upto): stale when a change at or after `watermark` touches `entities` (and
        `customer_id`, unless it is to one of the `shared` tables); `upto` is the xmin of the
        snapshot that answered (no transaction below it can still commit)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _LoopQueue()
        future: asyncio.Future[tuple[bool, int]] = loop.create_future()
        queue.waiting.append((watermark, ",".join(entities), customer_id, ",".join(shared), future))
        if queue.task is None:
            queue.task = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _LoopQueue) -> None:
        try:
            while queue.waiting:
                batch = queue.waiting[: self.MAX_BATCH]
                del queue.waiting[: self.MAX_BATCH]
                try:
                    stale, upto = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._query, [b[:4] for b in batch]
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
                        future.set_result((n in stale, upto))
        finally:
            queue.task = None
            for *_, future in queue.waiting:  # only when cancelled
                future.cancel()
            queue.waiting.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _query(self, keys: list[tuple[str, str, int | None, str]]) -> tuple[set[int], int]:
        params = {
            "watermarks": [k[0] for k in keys],
            "entities": [k[1] for k in keys],
            "customers": [k[2] for k in keys],
            "shared": [k[3] for k in keys],
        }
        # One statement: its snapshot is taken when it starts, after every request it answers.
        row = self.db.run_statement(lambda conn: conn.execute(text(_CHANGED_SINCE), params).one())
        return set(row.stale), int(row.upto)


@dataclass
class _LoopQueue:
    waiting: list[tuple[str, str, int | None, str, asyncio.Future[tuple[bool, int]]]] = field(
        default_factory=list
    )
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Verified:
    """A file (by watermark) known current below `since`: no relevant change exists under it.

    `own_reflected`: the own-write sequence the file is known to include (see
    `RecentChanges.own_sequence`).
    """

    watermark: int
    since: int
    own_reflected: int = 0


@dataclass(frozen=True)
class _Absent:
    """A key a build found absent: no relevant change below `since` as of `found_at`."""

    since: int
    found_at: float  # monotonic
    own_reflected: int


class CacheStore:
    """Reads, builds and refreshes cache files; one refresh per key at a time."""

    def __init__(
        self,
        cache_dir: Path,
        db: Database,
        ttl_seconds: int,
        max_remembered_absent: int = MAX_REMEMBERED_ABSENT,
        max_concurrent_builds: int = MAX_CONCURRENT_BUILDS,
        max_remembered_bytes: int = MAX_REMEMBERED_BYTES,
        recent: RecentChanges | None = None,
        max_verified: int = MAX_VERIFIED,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.max_remembered_absent = max_remembered_absent
        self.max_verified = max_verified
        # Without a listener feeding it, memory never covers: every hit asks the database,
        # but this process's own writes are still known (read-your-writes).
        self.recent = recent if recent is not None else RecentChanges()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-refresh")
        self._builders = ThreadPoolExecutor(
            max_workers=max_concurrent_builds,
            thread_name_prefix="cache-build",
        )
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        # Only keys with a build running or waiting have a lock: bounded by the worker threads.
        self._build_locks: dict[str, _KeyLock] = {}
        self._absent: OrderedDict[str, _Absent] = OrderedDict()
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        # Files read before, by relative path: (stat signature, contents), least recent first.
        self._files: OrderedDict[str, tuple[tuple[int, ...], Cached]] = OrderedDict()
        self._file_bytes = 0
        self.max_remembered_bytes = max_remembered_bytes
        self._changes = ChangeChecks(db)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._builders.shutdown(wait=True, cancel_futures=True)
        self._changes.close()

    def read(self, key: CacheKey) -> Cached | None:
        """The file of `key` as it is on disk now (None: missing, unreadable or another schema).

        A file read before is served from memory while its `stat` signature is unchanged: a
        hit then costs one `stat` instead of a read, a parse and a hash. Every publish renames
        a new inode into place, so a replaced file shows a new signature. (Should a reused
        inode ever match, in the same clock tick and at the same size, the older document's
        watermark is behind the change that replaced it, and the freshness check says STALE.)
        """
        path = self.cache_dir / key.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError:
            log.warning("unreadable cache file %s; rebuilding", key.path)
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        with self._lock:
            known = self._files.get(key.path)
            if known is not None and known[0] == signature:
                self._files.move_to_end(key.path)
                return known[1]
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
        cached = Cached(body, document)
        self._remember_file(key.path, signature, cached)
        return cached

    def _remember_file(self, name: str, signature: tuple[int, ...], cached: Cached) -> None:
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._file_bytes -= len(old[1].body)
            if len(cached.body) > self.max_remembered_bytes // 8:
                return  # a very large file (the index) is read each time, not kept
            self._files[name] = (signature, cached)
            self._file_bytes += len(cached.body)
            while self._file_bytes > self.max_remembered_bytes:
                _, (_, dropped) = self._files.popitem(last=False)
                self._file_bytes -= len(dropped.body)

    async def freshness(self, key: CacheKey, cached: Cached) -> str:
        """`CURRENT`, `STALE` (past the TTL, or a relevant change the file does not reflect)
        or `OWN_WRITE` (stale because of a write of this process not yet rebuilt).

        Memory answers when it covers the file's threshold (no SQL); otherwise one batched
        change-log query does, and a file it finds current is remembered as such.
        """
        if cached.age_seconds() >= self.ttl_seconds:
            return STALE
        watermark = str(cached.document.get("watermark") or "0")
        if not watermark.isdigit():
            return STALE
        w = int(watermark)
        with self._lock:
            verified = self._verified.get(key.name)
            if verified is not None:
                self._verified.move_to_end(key.name)
        if verified is None or verified.watermark != w:
            verified = _Verified(w, w)
        memory = self.recent.check(
            verified.since, key.entities, key.customer_id, key.shared, verified.own_reflected
        )
        if memory.own:
            return OWN_WRITE
        if memory.covered:
            return STALE if memory.stale else CURRENT
        stale, upto = await self._changes.changed_since(
            str(verified.since), key.entities, key.customer_id, key.shared
        )
        if stale:
            return STALE
        self._remember_verified(
            key.name, _Verified(w, max(verified.since, upto), verified.own_reflected)
        )
        return CURRENT

    async def is_stale(self, key: CacheKey, cached: Cached) -> bool:
        """True unless `freshness` says `CURRENT`."""
        return await self.freshness(key, cached) != CURRENT

    def build(self, key: CacheKey) -> Cached | None:
        """Build from one DB snapshot and publish atomically; None when the resource is absent."""
        with self._build_lock(key.name):
            # Own writes recorded by now have committed, so this snapshot sees them.
            own_reflected = self.recent.own_sequence
            with self.db.snapshot() as conn:
                payload = key.build(conn)
                watermark = reflected_watermark(conn)
                # Every transaction below it had finished: nothing relevant exists between the
                # watermark and it (the watermark is the last change below it, plus one).
                since = max(int(watermark), int(safe_upper_bound(conn)))
            path = self.cache_dir / key.path
            if payload is None:
                # Gone from the DB (e.g. a deleted customer): drop its file so it 404s too.
                remove(path, watermark=watermark)
                self._remember_absent(key.name, _Absent(since, time.monotonic(), own_reflected))
                return None
            self._forget_absent(key.name)
            document = envelope(payload, watermark=watermark, schema_version=key.schema_version)
            try:
                outcome = publish_document(path, document)
            except OSError as exc:
                log.error("could not write cache file %s: %s", key.path, type(exc).__name__)
            else:
                if outcome.written:
                    self._remember_verified(
                        key.name, _Verified(int(watermark), since, own_reflected)
                    )
                else:  # a newer file is there (the worker's): serve that
                    newer = self.read(key)
                    if newer is not None:
                        newer_watermark = str(newer.document.get("watermark") or "")
                        if newer_watermark.isdigit():
                            # Not rebuilt again for the same own writes: at worst STALE.
                            w = int(newer_watermark)
                            self._remember_verified(key.name, _Verified(w, w, own_reflected))
                        return newer
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

        Answered like a hit (memory, else one batched change-log check) instead of a build. A
        remembered absence also expires with the TTL, as a file does.
        """
        with self._lock:
            entry = self._absent.get(key.name)
            if entry is None:
                return False
            self._absent.move_to_end(key.name)
        if time.monotonic() - entry.found_at >= self.ttl_seconds:
            return False
        memory = self.recent.check(
            entry.since, key.entities, key.customer_id, key.shared, entry.own_reflected
        )
        if memory.covered or memory.own:
            return not memory.stale
        stale, upto = await self._changes.changed_since(
            str(entry.since), key.entities, key.customer_id, key.shared
        )
        if not stale and upto > entry.since:
            with self._lock:
                if self._absent.get(key.name) is entry:  # not replaced meanwhile
                    self._absent[key.name] = _Absent(upto, entry.found_at, entry.own_reflected)
        return not stale

    def _remember_absent(self, name: str, entry: _Absent) -> None:
        with self._lock:
            self._verified.pop(name, None)
            self._absent[name] = entry
            self._absent.move_to_end(name)
            while len(self._absent) > self.max_remembered_absent:
                self._absent.popitem(last=False)

    def _forget_absent(self, name: str) -> None:
        with self._lock:
            self._absent.pop(name, None)

    def _remember_verified(self, name: str, entry: _Verified) -> None:
        with self._lock:
            current = self._verified.get(name)
            if current is not None and current.watermark == entry.watermark:
                # Two answers about the same file: keep the most each one learned.
                entry = _Verified(
                    entry.watermark,
                    max(entry.since, current.since),
                    max(entry.own_reflected, current.own_reflected),
                )
            self._verified[name] = entry
            self._verified.move_to_end(name)
            while len(self._verified) > self.max_verified:
                self._verified.popitem(last=False)

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


def _not_found(key: CacheKey) -> Problem:
    return Problem(
        404,
        "Not found",
        f"No {key.name.split(':')[0]} with that id.",
        headers={"Cache-Control": CACHE_CONTROL},
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in header.split(","))
    return etag in tags


async def serve(request: Request, key: CacheKey) -> Response:
    """The cache-first read path shared by every GET route.

    It runs on the event loop: a hit reads one small local file and asks memory whether it is
    current (or, when memory cannot tell, awaits the batched change-log check), with no worker
    thread of its own; a miss, or a file behind this process's own write, builds in a worker
    thread.
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
            raise _not_found(key)
        cached, status = built, "MISS"
    else:
        rebuilt: Cached | None = cached
        try:
            freshness = await store.freshness(key, cached)
            if freshness == OWN_WRITE:
                # The client may have just written it: answer with its write, not before it.
                rebuilt, status = await store.build_for_request(key), "MISS"
            elif freshness == STALE:
                status = "STALE"
                store.refresh_in_background(key)
        except DatabaseUnavailable:
            status = "STALE"
            generated = cached.document.get("generated_at")
            if generated:
                extra["X-Stale-Since"] = str(generated)
            if db.down_since_iso():
                extra["X-Database-Unavailable-Since"] = db.down_since_iso()
        if rebuilt is None:  # our own write deleted it
            raise _not_found(key)
        cached = rebuilt

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


# --- the keys: one per file of the cache registry -------------------------------------------


def file_key(file: registry.CacheFile) -> CacheKey:
    """The key of a single registry file."""
    return CacheKey(file.asset, file.file(), file.schema_version, file.reads, file.build)


def customer_key(customer_id: int) -> CacheKey:
    """The key of one customer's 360 file."""
    profiles = registry.CUSTOMER_PROFILES
    return CacheKey(
        f"customer:{customer_id}",
        profiles.file(customer_id),
        profiles.schema_version,
        profiles.reads,
        lambda conn: registry.build_customer_profile(conn, customer_id),
        customer_id=customer_id,
        shared=profiles.shared,
    )


_INDEX = file_key(registry.CUSTOMER_INDEX)
_SUMMARY = file_key(registry.ANALYTICS_SUMMARY)
_INSIGHTS = file_key(registry.MARKETING_INSIGHTS)


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
    return await serve(request, _INDEX)


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
    return await serve(request, customer_key(customer_id))


@router.get(
    "/api/analytics/summary",
    responses=_CACHED,
    summary="KPI summary (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def analytics_summary(request: Request) -> Response:
    """`analytics/summary.json`."""
    return await serve(request, _SUMMARY)


@router.get(
    "/api/marketing/insights",
    responses=_CACHED,
    summary="Ad insights (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def marketing_insights(request: Request) -> Response:
    """`marketing/insights.json`."""
    return await serve(request, _INSIGHTS)


def preload() -> None:
    """Import the builders' heavier dependencies (the summary's JSON schema validator) at
    startup, not on the event loop inside the first request."""
    from crm_pipeline.cache.summary import _validator

    _validator()
