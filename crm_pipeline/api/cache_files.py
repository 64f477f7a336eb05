"""Cache files as the API reads them from disk: `Cached` (body, ETag, age) and `CacheFiles`,
which keeps the files read before in memory while their `stat` signature holds.

See docs/architecture.md for the cache-first read path these serve.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from crm_pipeline.api.cache_keys import CacheKey

log = logging.getLogger("crm_pipeline.api.cache")

MAX_REMEMBERED_BYTES = 64 * 1024 * 1024  # cache files kept in memory (stat-checked)

Signature = tuple[int, ...]  # (inode, mtime_ns, ctime_ns, size)


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
    """The cache files under `cache_dir`, read through a bounded, stat-checked memory."""

    def __init__(self, cache_dir: Path, max_remembered_bytes: int = MAX_REMEMBERED_BYTES) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_remembered_bytes = max_remembered_bytes
        self._lock = threading.Lock()
        # Files read before, by relative path: (stat signature, contents), least recent first.
        self._files: OrderedDict[str, tuple[Signature, Cached]] = OrderedDict()
        self._bytes = 0

    def path(self, key: CacheKey) -> Path:
        """Where the file of `key` lives."""
        return self.cache_dir / key.path

    def read(self, key: CacheKey) -> Cached | None:
        """The file of `key` as it is on disk now (None: missing, unreadable or another schema).

        A file read before is served from memory while its `stat` signature is unchanged: a
        hit then costs one `stat` instead of a read, a parse and a hash. Every publish renames
        a new inode into place, so a replaced file shows a new signature. (Should a reused
        inode ever match, in the same clock tick and at the same size, the older document's
        watermark is behind the change that replaced it, and the freshness check says STALE.)
        """
        path = self.path(key)
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
        cached = self._load(path, key)
        if cached is not None:
            self._remember(key.path, signature, cached)
        return cached

    def _load(self, path: Path, key: CacheKey) -> Cached | None:
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

    def _remember(self, name: str, signature: Signature, cached: Cached) -> None:
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._bytes -= len(old[1].body)
            if len(cached.body) > self.max_remembered_bytes // 8:
                return  # a very large file (the index) is read each time, not kept
            self._files[name] = (signature, cached)
            self._bytes += len(cached.body)
            while self._bytes > self.max_remembered_bytes:
                _, (_, dropped) = self._files.popitem(last=False)
                self._bytes -= len(dropped.body)
