"""The customer index of one API process: built from the cache's index segments, kept current
by reading only the segments whose manifest entry moved.

A thread of its own (`customer-index`) does the I/O, never a request:
- it reads the manifest when woken (a change to a table the index reads was heard of) and at
  least every `SYNC_SECONDS` (a local `stat`, an S3 conditional GET: nothing is parsed while
  it is unchanged), and reloads only the segments listed at a newer watermark than the one
  held, applying each by difference (`CustomerSearch.replace_segment`);
- segments still behind a change `PENDING_GRACE_SECONDS` after it was heard of (no cache worker
  rebuilt them) it rebuilds itself, from one snapshot, forward-only like every writer;
- after the TTL, or while memory cannot tell (`SegmentFreshness.covered`), it asks the change
  log once.

A request waits only when it must (`prepare`): for the first load, for a build when the cache
has no index at all (MISS), for the segments of this process's own writes (read-your-writes,
MISS), and for a change-log check when memory cannot tell. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from crm_pipeline.api.customer_index_freshness import SegmentFreshness
from crm_pipeline.api.customer_query import Page, Query, page
from crm_pipeline.api.customer_search import Customer, CustomerSearch, collector_paused
from crm_pipeline.api.database import Database
from crm_pipeline.api.problems import DatabaseUnavailable, Problem
from crm_pipeline.cache import customer_index
from crm_pipeline.cache.rebuild import rebuild_index
from crm_pipeline.cache.recent_changes import RecentChanges
from crm_pipeline.cache.registry import CUSTOMER_INDEX
from crm_pipeline.cache.stores import Signature, Store, StoreUnavailable

log = logging.getLogger("crm_pipeline.api.customers")

SYNC_SECONDS = 1.0  # the manifest is read at least this often
FAST_SYNC_SECONDS = 0.02  # first re-read while a segment is pending (doubling up to SYNC)
PENDING_GRACE_SECONDS = 0.5  # a cache worker's usual head start before we build it ourselves
FREEZE_AFTER_SEGMENTS = 16  # a (re)load of this many segments moves memory out of the GC's way
T = TypeVar("T")


@dataclass
class Answer:
    """How a page is served: `X-Cache` and any outage headers."""

    status: str = "HIT"  # HIT, MISS (built for this request) or STALE
    headers: dict[str, str] = field(default_factory=dict)


class CustomerIndexMemory:
    """The in-memory customer index of one API process (see the module docstring)."""

    def __init__(
        self, store: Store, db: Database, recent: RecentChanges, ttl_seconds: float
    ) -> None:
        self.store = store
        self.db = db
        self.recent = recent
        self.ttl_seconds = ttl_seconds
        self.search = CustomerSearch()
        self.freshness = SegmentFreshness(CUSTOMER_INDEX.reads)
        self._held: dict[int, tuple[int, str]] = {}  # segment -> (watermark, generated_at)
        self._manifest: Signature | None = None  # the manifest's signature when last applied
        self._present = False  # the store has a usable manifest
        self._synced = False  # the store was read once
        self._store_down_since: str | None = None
        self._io_lock = threading.Lock()  # one sync at a time (builds are forward-only)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="customer-index")
        # Searches, one at a time, beside the event loop (see `page`).
        self._searcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="customer-search")
        self.freshness.on_pending = self._wake.set
        recent.subscribe(self.freshness.note)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread: it loads the index at once, then keeps it current."""
        self._thread = threading.Thread(target=self._run, name="customer-index", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and the request helpers."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._searcher.shutdown(wait=True, cancel_futures=True)

    def loaded(self) -> bool:
        """Has the first read of the store ended (the index is in memory, or the cache has
        none yet and the first request builds it)?"""
        return self._synced

    def count(self) -> int:
        """How many customers memory holds."""
        return len(self.search)

    def _run(self) -> None:
        delay = FAST_SYNC_SECONDS
        while not self._stop.is_set():
            self._wake.clear()  # before the round: a wake-up during it is not lost
            try:
                self.refresh()
            except Exception as exc:  # the type only: a message could quote row values
                log.warning("customer index refresh failed (%s)", type(exc).__name__)
            if self.freshness.pending():  # the worker is about to publish: look again soon
                self._wake.wait(delay)
                delay = min(delay * 2, SYNC_SECONDS)
            else:
                self._wake.wait(SYNC_SECONDS)
                delay = FAST_SYNC_SECONDS

    def refresh(self) -> None:
        """One round of the thread: read the store, build what no one else did, check."""
        self.sync()
        if not self._present:
            return  # no index in the cache yet: the first request builds it (MISS)
        now = time.monotonic()
        pending = self.freshness.pending()
        late = [s for s, p in pending.items() if now - p.noticed_at >= PENDING_GRACE_SECONDS]
        if late:
            self._guarded(lambda: self.build(late))
        if self._ttl_expired() or not self.freshness.covered(self.recent.floor):
            self._guarded(self.check)

    def _guarded(self, work: Callable[[], Any]) -> None:
        # An outage is logged once (by Database, by `sync`); memory is served meanwhile.
        with contextlib.suppress(DatabaseUnavailable, StoreUnavailable):
            work()

    # --- reading the store -------------------------------------------------------------------

    def sync(self) -> None:
        """Apply what the store's manifest says changed since the last call."""
        with self._io_lock:
            try:
                self._sync()
            except StoreUnavailable as exc:
                if self._store_down_since is None:
                    log.warning("%s; the customer list is served from memory", exc)
                    self._store_down_since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                return
            finally:
                self._synced = True
            self._store_down_since = None

    def _sync(self) -> None:
        fetched = self.store.fetch(customer_index.MANIFEST_FILE, self._manifest)
        if fetched is None:
            self._present = False
            return
        if fetched.body is None:
            return  # unchanged
        manifest = _json(fetched.body)
        if not customer_index.usable_manifest(manifest, CUSTOMER_INDEX.schema_version):
            self._present = False
            return
        self.freshness.unlisted_below(customer_index.full_watermark(manifest))
        entries = customer_index.manifest_entries(manifest)
        for segment, entry in entries.items():
            if entry.count == 0:
                self.freshness.held(segment, entry.watermark)
        stale = [
            s
            for s, e in entries.items()
            if e.count > 0 and e.watermark > self._held.get(s, (-1, ""))[0]
        ]
        gone = [s for s in self._held if entries.get(s) is None or entries[s].count == 0]
        complete = self._apply(stale, gone)
        self._present = True
        if complete:  # else the manifest is read again next time, and the rest retried
            self._manifest = fetched.signature

    def _apply(self, stale: list[int], gone: list[int]) -> bool:
        """Reload the `stale` segments and forget the `gone`; False if one could not be read."""
        loaded: dict[int, tuple[list[Customer], int, str]] = {}
        complete = True
        # A first load at 1M customers makes millions of objects that all live on.
        with collector_paused(freeze=len(stale) >= FREEZE_AFTER_SEGMENTS):
            for segment in stale:
                document = self._read_segment(segment)
                if document is None:
                    complete = False
                    continue
                customers = [Customer.from_row(row) for row in document["customers"]]
                loaded[segment] = (customers, int(document["watermark"]), document["generated_at"])
            if not self._held and loaded:  # the first load: everything at once
                self.search.load({s: held[0] for s, held in loaded.items()})
            else:
                for segment, (customers, _, _) in loaded.items():
                    self.search.replace_segment(segment, customers)
        for segment in gone:
            self.search.drop_segment(segment)
            self._held.pop(segment, None)
        for segment, (_, watermark, generated_at) in loaded.items():
            self._held[segment] = (watermark, generated_at)
            self.freshness.held(segment, watermark)
        return complete

    def _read_segment(self, segment: int) -> dict[str, Any] | None:
        fetched = self.store.fetch(customer_index.segment_file(segment))
        document = _json(fetched.body) if fetched is not None and fetched.body else None
        if (
            not isinstance(document, dict)
            or document.get("schema_version") != CUSTOMER_INDEX.schema_version
            or not str(document.get("watermark", "")).isdigit()
        ):
            log.warning("customer index segment %s unreadable; read again later", segment)
            return None
        return document

    # --- building and checking ---------------------------------------------------------------

    def build(self, segments: list[int] | None) -> None:
        """Rebuild `segments` (None: the whole index) from one snapshot, publish them
        forward-only, and load what the store then holds."""
        started = time.monotonic()
        with self.db.snapshot() as conn:
            rebuild_index(conn, self.store, None, segments=segments)
        if segments is None:  # every relevant change below the build is in it
            self.freshness.verified_at = max(self.freshness.verified_at or 0.0, started)
        self.sync()

    def check(self) -> None:
        """Ask the change log what memory cannot tell (`SegmentFreshness.check`)."""
        started = time.monotonic()
        with self.db.snapshot() as conn:
            self.freshness.check(conn, started)

    def _ttl_expired(self) -> bool:
        checked = self.freshness.verified_at
        return checked is None or time.monotonic() - checked >= self.ttl_seconds

    # --- the request path --------------------------------------------------------------------

    async def prepare(self) -> Answer:
        """Make the index fit to answer a request now, and say how (see the module docstring).
        Raises DatabaseUnavailable only when there is no index to serve at all."""
        answer = Answer()
        if not self._synced:
            await self._in_thread(self.sync)
        if not self._present and await self._in_thread(self._build_missing):
            answer.status = "MISS"
        try:
            if self.freshness.own():
                await self._in_thread(self._build_own)
                answer.status = "MISS"
            if not self.freshness.covered(self.recent.floor):
                await self._in_thread(self.check)
        except (DatabaseUnavailable, StoreUnavailable):
            answer.status = "STALE"
            answer.headers.update(self._outage_headers())
            return answer
        if answer.status == "HIT" and (self.freshness.pending() or self._ttl_expired()):
            answer.status = "STALE"
            self._wake.set()
        if self._store_down_since:
            answer.headers["X-Cache-Store-Unavailable-Since"] = self._store_down_since
        return answer

    def _build_missing(self) -> bool:
        """Build the whole index unless the store has one by now; True if built."""
        self.sync()  # another writer may have published it since the last read
        if self._present:
            return False
        try:
            self.build(None)
        except StoreUnavailable:
            raise Problem(
                503,
                "Cache store unavailable",
                "The customer list is not in the cache yet and the cache store cannot be "
                "written right now. Retry later.",
                headers={"Retry-After": "5"},
            ) from None
        return True

    def _build_own(self) -> None:
        own = self.freshness.own()
        if own:
            self.build(own)

    def _outage_headers(self) -> dict[str, str]:
        headers = {}
        generated = min((g for _, g in list(self._held.values())), default=None)
        if generated:
            headers["X-Stale-Since"] = generated
        if self.db.down_since_iso():
            headers["X-Database-Unavailable-Since"] = self.db.down_since_iso()
        if self._store_down_since:
            headers["X-Cache-Store-Unavailable-Since"] = self._store_down_since
        return headers

    async def page(self, query: Query) -> Page:
        """The page `query` asks for. A page without a search walks `limit` customers: answered
        on the event loop. A search may walk far further (about 100 ms at a million customers
        in its worst plans): it runs in a thread of its own, one search at a time, so that
        meanwhile the event loop keeps answering every other request (the GIL lets it in every
        few milliseconds) instead of stalling behind it."""
        if query.search is None:
            return page(self.search, query)
        return await asyncio.get_running_loop().run_in_executor(
            self._searcher, page, self.search, query
        )

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
