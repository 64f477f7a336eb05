"""`CacheStore`: is a cache file current, and (re)building it; one build per key at a time.

Is a file current? Answered without the database whenever possible. The process's change
listener (`change_listener.py`) keeps the recent changes in memory (`RecentChanges`) with a
coverage floor C: a file whose threshold is at least C is judged by memory alone, with no SQL.
A file's threshold is its watermark W, raised to U once a change-log check (or this process's
own build) has shown that no relevant change exists below U (`freshness_memory.Verified`).
Below the floor, or while the listener is disconnected, one batched change-log query
(`change_checks.ChangeChecks`) answers instead, and its snapshot's xmin is remembered as U so
the next hits of that file need memory only. A write by another client is therefore seen by
hits as soon as its notification is processed (milliseconds); a write through this process, at
once.

A 404 (an id that does not exist) is remembered with the threshold of the snapshot that found
it absent (`freshness_memory.Absent`), so asking again costs no build (and usually no query),
until a change for that id (its creation, say) appears.

The files live in a local folder or an S3 bucket prefix (`CacheFiles.store`); a build publishes
through `crm_pipeline.cache.publish` like every other writer, forward-only. A remote store is
read on threads of its own (`lookup`), never on the event loop. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from crm_pipeline.api.cache_files import MAX_REMEMBERED_BYTES, Cached, CacheFiles
from crm_pipeline.api.cache_keys import CacheKey
from crm_pipeline.api.change_checks import ChangeChecks
from crm_pipeline.api.database import Database
from crm_pipeline.api.freshness_memory import (
    MAX_REMEMBERED_ABSENT,
    MAX_VERIFIED,
    Absent,
    FreshnessMemory,
    Verified,
)
from crm_pipeline.api.key_locks import KeyLocks
from crm_pipeline.api.problems import DatabaseUnavailable
from crm_pipeline.cache.publish import publish_document, remove
from crm_pipeline.cache.recent_changes import RecentChanges
from crm_pipeline.cache.stores import Location, StoreUnavailable
from crm_pipeline.cachefile import dumps, envelope
from crm_pipeline.db.changelog import reflected_watermark, safe_upper_bound

log = logging.getLogger("crm_pipeline.api.cache")

# Misses built at once; the rest wait their turn. Each build thread competes with the event
# loop for the GIL and with PostgreSQL for the cores, so a burst of misses (a scan of random
# ids, say) would otherwise slow every hit down (benchmarks/api_reads.py measures it).
MAX_CONCURRENT_BUILDS = 2
# Reads of a remote store in flight at once: network waits, not CPU.
MAX_CONCURRENT_REMOTE_READS = 8

# What `CacheStore.freshness` says about a cached file.
CURRENT = "current"
STALE = "stale"  # serve it, refresh in the background
OWN_WRITE = "own-write"  # stale because of a write of this process: rebuild for this request


def _why(exc: OSError) -> str:
    """What went wrong, for the log: a store's own message (it names the store and the kind of
    failure), else the kind of error."""
    return str(exc) if isinstance(exc, StoreUnavailable) else type(exc).__name__


class CacheStore:
    """Reads, builds and refreshes cache files; one refresh per key at a time."""

    def __init__(
        self,
        cache_dir: Location,
        db: Database,
        ttl_seconds: int,
        max_remembered_absent: int = MAX_REMEMBERED_ABSENT,
        max_concurrent_builds: int = MAX_CONCURRENT_BUILDS,
        max_remembered_bytes: int = MAX_REMEMBERED_BYTES,
        recent: RecentChanges | None = None,
        max_verified: int = MAX_VERIFIED,
    ) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.files = CacheFiles(cache_dir, max_remembered_bytes)
        self.memory = FreshnessMemory(max_remembered_absent, max_verified)
        # Without a listener feeding it, memory never covers: every hit asks the database,
        # but this process's own writes are still known (read-your-writes).
        self.recent = recent if recent is not None else RecentChanges()
        self.build_locks = KeyLocks()
        self._changes = ChangeChecks(db)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-refresh")
        self._builders = ThreadPoolExecutor(
            max_workers=max_concurrent_builds,
            thread_name_prefix="cache-build",
        )
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        self._readers = None
        if self.files.store.remote:
            self._readers = ThreadPoolExecutor(
                max_workers=MAX_CONCURRENT_REMOTE_READS, thread_name_prefix="cache-read"
            )

    def close(self) -> None:
        """Stop the build, refresh, read and check threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._builders.shutdown(wait=True, cancel_futures=True)
        if self._readers is not None:
            self._readers.shutdown(wait=True, cancel_futures=True)
        self._changes.close()

    def read(self, key: CacheKey) -> Cached | None:
        """The file of `key` as the store has it now (see `CacheFiles.read`)."""
        return self.files.read(key)

    async def lookup(self, key: CacheKey) -> Cached | None:
        """`read` for the event loop: a local `stat` in place, a remote round trip on a thread."""
        if self._readers is None:
            return self.files.read(key)
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read, key)

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
        verified = self.memory.verified(key.name)
        if verified is None or verified.watermark != w:
            verified = Verified(w, w)
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
        self.memory.remember_verified(
            key.name, Verified(w, max(verified.since, upto), verified.own_reflected)
        )
        return CURRENT

    async def known_absent(self, key: CacheKey) -> bool:
        """True when a build found `key` absent and no change since says otherwise.

        Answered like a hit (memory, else one batched change-log check) instead of a build. A
        remembered absence also expires with the TTL, as a file does.
        """
        entry = self.memory.absent(key.name)
        if entry is None:
            return False
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
            self.memory.raise_absent(key.name, entry, upto)
        return not stale

    def build(self, key: CacheKey) -> Cached | None:
        """Build from one DB snapshot and publish atomically; None when the resource is absent."""
        with self.build_locks.hold(key.name):
            # Own writes recorded by now have committed, so this snapshot sees them.
            own_reflected = self.recent.own_sequence
            with self.db.snapshot() as conn:
                payload = key.build(conn)
                watermark = reflected_watermark(conn)
                # Every transaction below it had finished: nothing relevant exists between the
                # watermark and it (the watermark is the last change below it, plus one).
                since = max(int(watermark), int(safe_upper_bound(conn)))
            if payload is None:
                # Gone from the DB (e.g. a deleted customer): drop its file so it 404s too.
                self._remove(key, watermark)
                absent = Absent(since, time.monotonic(), own_reflected)
                self.memory.remember_absent(key.name, absent)
                return None
            self.memory.forget_absent(key.name)
            document = envelope(payload, watermark=watermark, schema_version=key.schema_version)
            return self._publish(key, document, Verified(int(watermark), since, own_reflected))

    def _remove(self, key: CacheKey, watermark: str) -> None:
        self.files.forget(key.path)
        try:
            remove(self.files.path(key), watermark=watermark)
        except OSError as exc:  # the 404 stands; the next build removes it
            log.error("could not remove cache file %s: %s", key.path, _why(exc))

    def _publish(self, key: CacheKey, document: dict[str, Any], built: Verified) -> Cached:
        """Write `document` unless a newer file is there already; what to serve either way."""
        try:
            outcome = publish_document(self.files.path(key), document)
        except OSError as exc:
            log.error("could not write cache file %s: %s", key.path, _why(exc))
            body = dumps(document)
            cached = Cached(body, orjson.loads(body))
            # Not published: hold it, so that hits are served while the store is unavailable.
            self.files.remember(key.path, None, cached)
            return cached
        else:
            if outcome.written:
                self.memory.remember_verified(key.name, built)
            else:  # a newer file is there (the worker's): serve that
                newer = self.files.read(key)
                if newer is not None:
                    self._remember_newer(key, newer, built.own_reflected)
                    return newer
        body = dumps(document)
        return Cached(body, orjson.loads(body))

    def _remember_newer(self, key: CacheKey, newer: Cached, own_reflected: int) -> None:
        """A file newer than our build reflects the same own writes: not rebuilt again for
        them (at worst it is found STALE)."""
        watermark = str(newer.document.get("watermark") or "")
        if watermark.isdigit():
            w = int(watermark)
            self.memory.remember_verified(key.name, Verified(w, w, own_reflected))

    async def build_for_request(self, key: CacheKey) -> Cached | None:
        """`build` on one of the build threads (`max_concurrent_builds` at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self._builders, self.build, key)

    def refresh_in_background(self, key: CacheKey) -> bool:
        """Schedule one rebuild of `key` unless one is already running; True if scheduled."""
        with self._refreshing_lock:
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
                with self._refreshing_lock:
                    self._refreshing.discard(key.name)

        try:
            self._executor.submit(run)
        except RuntimeError:  # shutting down
            with self._refreshing_lock:
                self._refreshing.discard(key.name)
            return False
        return True
