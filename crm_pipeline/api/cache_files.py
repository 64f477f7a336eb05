"""Cache files as the API reads them: `Cached` (body, ETag, age) and `CacheFiles`, which keeps
the files read before in memory while the store says they are unchanged.

The store is a local folder or an S3 bucket prefix (`crm_pipeline.cache.stores`). Either way a
hit asks the store one cheap question: a `stat` of a local file, a conditional GET (answered
304 without a body) of an object. The ETag sent to clients is a digest of the exact bytes
served, whichever store they came from, so every API process agrees on it.

When a remote store does not answer, the copy held in memory is served (and the answer says
so, `X-Cache-Store-Unavailable-Since`); the store is asked again after `RETRY_SECONDS`.

See docs/architecture.md for the cache-first read path these serve.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from crm_pipeline.api.cache_keys import CacheKey
from crm_pipeline.cache.stores import (
    Location,
    ObjectRef,
    Signature,
    Store,
    StoreUnavailable,
    open_store,
)

log = logging.getLogger("crm_pipeline.api.cache")

MAX_REMEMBERED_BYTES = 64 * 1024 * 1024  # cache files kept in memory (stat-checked)
# After a remote store failed to answer, hits are served from memory this long before the
# store is asked again, so an outage costs one timeout now and then, not one per request.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Cached:
    """One cache file's bytes and parsed document."""

    body: bytes
    document: dict[str, Any]

    @functools.cached_property
    def etag(self) -> str:
        """A strong ETag: a digest of the exact bytes served."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @functools.cached_property
    def generated_at(self) -> dt.datetime | None:
        """When the document was built (None when it does not say)."""
        try:
            return dt.datetime.fromisoformat(self.document["generated_at"])
        except (KeyError, TypeError, ValueError):
            return None

    def age_seconds(self) -> int:
        """Seconds since `generated_at` (0 when unknown)."""
        generated = self.generated_at
        if generated is None:
            return 0
        return max(0, int((dt.datetime.now(dt.UTC) - generated).total_seconds()))


class CacheFiles:
    """The cache files of a store, read through a bounded memory checked against the store."""

    def __init__(self, store: Location, max_remembered_bytes: int = MAX_REMEMBERED_BYTES) -> None:
        self.store: Store = open_store(store)
        self.max_remembered_bytes = max_remembered_bytes
        self._lock = threading.Lock()
        # Files read before, by relative path: (store signature, contents), least recent first.
        # A signature of None: a copy built here that the store has not confirmed.
        self._files: OrderedDict[str, tuple[Signature | None, Cached]] = OrderedDict()
        self._bytes = 0
        self._unavailable_since: dt.datetime | None = None
        self._retry_at = 0.0  # time.monotonic() after which the store is asked again

    def path(self, key: CacheKey) -> Path | ObjectRef:
        """Where the file of `key` lives (as `crm_pipeline.cache.publish` takes it)."""
        return self.store.file(key.path)

    def read(self, key: CacheKey) -> Cached | None:
        """The file of `key` as the store has it now (None: missing, unreadable or another
        schema); the copy in memory when the store does not answer.

        A file read before is served from memory while the store says it is unchanged: a hit
        then costs one `stat` (or one conditional GET) instead of a read, a parse and a hash.
        Every local publish renames a new inode into place, and every object PUT gets a new
        ETag, so a replaced file shows a new signature. (Should a reused inode ever match, in
        the same clock tick and at the same size, the older document's watermark is behind the
        change that replaced it, and the freshness check says STALE.)
        """
        with self._lock:
            known = self._files.get(key.path)
        if known is not None and self.store.remote and time.monotonic() < self._retry_at:
            return known[1]  # the store failed a moment ago: do not wait for it again
        try:
            fetched = self.store.fetch(key.path, known[0] if known else None)
        except StoreUnavailable as exc:
            self._unavailable(exc)
            return known[1] if known is not None else None
        except OSError:
            log.warning("unreadable cache file %s; rebuilding", key.path)
            return None
        self._available()
        if fetched is None:
            self.forget(key.path)  # removed (e.g. an erasure): never served again from memory
            return None
        if fetched.body is None and known is not None:
            with self._lock:
                if key.path in self._files:
                    self._files.move_to_end(key.path)
            return known[1]
        cached = self._load(fetched.body or b"", key)
        if cached is not None:
            self.remember(key.path, fetched.signature, cached)
        return cached

    def _load(self, body: bytes, key: CacheKey) -> Cached | None:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("unreadable cache file %s; rebuilding", key.path)
            return None
        if not isinstance(document, dict) or document.get("schema_version") != key.schema_version:
            return None  # written by another version of the code: rebuild
        return Cached(body, document)

    def remember(self, name: str, signature: Signature | None, cached: Cached) -> None:
        """Keep `cached` as the file `name` (signature None: not yet confirmed by the store)."""
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._bytes -= len(old[1].body)
            # A very large local file (the index) is read each time, not kept; a remote one is
            # kept, since the copy in memory is what an outage of the store leaves to serve.
            if len(cached.body) > self.max_remembered_bytes // 8 and not self.store.remote:
                return
            self._files[name] = (signature, cached)
            self._bytes += len(cached.body)
            while self._bytes > self.max_remembered_bytes and len(self._files) > 1:
                _, (_, dropped) = self._files.popitem(last=False)
                self._bytes -= len(dropped.body)

    def forget(self, name: str) -> None:
        """Drop the copy of `name` held in memory (its file was removed)."""
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._bytes -= len(old[1].body)

    def unavailable_since_iso(self) -> str | None:
        """Since when the store has not answered (None: it answers)."""
        since = self._unavailable_since
        return since.isoformat(timespec="seconds") if since else None

    def _unavailable(self, exc: StoreUnavailable) -> None:
        if self._unavailable_since is None:
            self._unavailable_since = dt.datetime.now(dt.UTC)
            log.warning("%s; serving the cache files held in memory", exc)
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _available(self) -> None:
        if self._unavailable_since is not None:
            log.info("cache store %s answers again", self.store.url)
            self._unavailable_since = None
