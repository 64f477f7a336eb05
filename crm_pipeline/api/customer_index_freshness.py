"""Is the API's in-memory customer index current? Answered per segment, mostly from memory.

Each segment has a threshold T: no change to a table the index reads, naming one of its
customers, exists below T that memory does not reflect (T starts at the watermark of the
segment held, and a change-log check raises it). Segments the manifest has never listed share a
default threshold: its `full_watermark` (none of their ids held a customer then), raised by
checks too.

- Every change the process hears of (`RecentChanges`, fed by the change listener and by the
  process's own writes) is `note`d: one at or above its segment's threshold makes the segment
  *pending* (a TRUNCATE: every segment), and *own* when this process wrote it.
- Loading a segment from the store at watermark W raises T to W and clears what W reflects.
- Memory answers alone (`covered`) while the listener covers every threshold (its floor is at
  most the lowest T): any change that matters since then was heard of. Otherwise, or after the
  TTL, `check` asks the change log once, in one statement, for the newest relevant change per
  segment: the segments with one at or above T become pending, the others' T rises to the
  check's bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, text

from crm_pipeline.cache.customer_index import SEGMENT_WIDTH, segment_of
from crm_pipeline.cache.recent_changes import Change

# The bound and the newest relevant change per segment (NULL segment: a TRUNCATE), in one
# statement, so both come from one snapshot.
_CHECK = text(
    """
WITH b AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS upto)
SELECT b.upto::text AS upto, c.segment, c.txid
FROM b LEFT JOIN LATERAL (
    SELECT CASE WHEN op = 'truncate' THEN NULL ELSE customer_id / :width END AS segment,
           max(txid::text::numeric)::text AS txid
    FROM change_log
    WHERE txid >= CAST(:since AS xid8) AND txid < b.upto
      AND entity = ANY(CAST(:entities AS text[]))
      AND (customer_id IS NOT NULL OR op = 'truncate')
    GROUP BY 1
) c ON true
"""
)


@dataclass(frozen=True)
class Pending:
    """A segment memory knows to be behind: the newest change noticed, and since when."""

    txid: int
    noticed_at: float  # monotonic


class SegmentFreshness:
    """Thresholds, pending and own-write segments of one process's customer index."""

    def __init__(self, entities: Iterable[str]) -> None:
        self.entities = frozenset(entities)
        self._lock = threading.Lock()
        self._threshold: dict[int, int] = {}
        self._default = 0
        self._pending: dict[int, Pending] = {}
        self._own: dict[int, int] = {}  # segment -> newest own change not reflected
        self.verified_at: float | None = None  # monotonic: the last check (or full build)
        self.on_pending = lambda: None  # told when a segment becomes pending

    def note(self, change: Change, own_seq: int) -> None:
        """A committed change (a `RecentChanges` subscriber: quick, no I/O)."""
        if change.entity not in self.entities:
            return
        if change.all_customers:
            with self._lock:
                segments = list(self._threshold)
        elif change.customer_id is not None:
            segments = [segment_of(change.customer_id)]
        else:
            return  # e.g. a lead linked to no customer: in no segment
        with self._lock:
            marked = [s for s in segments if self._mark(s, change.txid, bool(own_seq))]
        if marked:
            self.on_pending()

    def _mark(self, segment: int, txid: int, own: bool) -> bool:
        if txid < self._threshold.get(segment, self._default):
            return False  # what memory holds reflects it already
        known = self._pending.get(segment)
        since = known.noticed_at if known else time.monotonic()
        self._pending[segment] = Pending(max(txid, known.txid if known else 0), since)
        if own:
            self._own[segment] = max(txid, self._own.get(segment, 0))
        return True

    def held(self, segment: int, watermark: int) -> None:
        """Memory now holds `segment` as of `watermark` (loaded, or gone with count 0)."""
        with self._lock:
            threshold = max(self._threshold.get(segment, 0), watermark)
            self._threshold[segment] = threshold
            pending = self._pending.get(segment)
            if pending is not None and pending.txid < threshold:
                del self._pending[segment]
            if self._own.get(segment, threshold) < threshold:
                del self._own[segment]

    def unlisted_below(self, watermark: int) -> None:
        """Segments the manifest does not list held no customer as of `watermark`."""
        with self._lock:
            self._default = max(self._default, watermark)

    def since(self) -> int:
        """The lowest threshold: a check must read the change log from there."""
        with self._lock:
            return (
                min(self._default, *self._threshold.values()) if self._threshold else self._default
            )

    def covered(self, floor: int | None) -> bool:
        """Can memory alone tell (the listener's `floor` is at or below every threshold)?"""
        return floor is not None and self.since() >= floor

    def pending(self) -> dict[int, Pending]:
        """The segments memory knows to be behind."""
        with self._lock:
            return dict(self._pending)

    def own(self) -> list[int]:
        """The segments behind because of a write this process made (read-your-writes)."""
        with self._lock:
            return sorted(self._own)

    def check(self, conn: Connection, started_at: float) -> None:
        """Ask the change log (see the module docstring); `started_at` is when the caller
        decided to ask (monotonic), the check's age for the TTL."""
        rows = conn.execute(
            _CHECK,
            {"since": str(self.since()), "entities": sorted(self.entities), "width": SEGMENT_WIDTH},
        ).all()
        upto = int(rows[0].upto)
        newest = {r.segment: int(r.txid) for r in rows if r.txid is not None}
        truncated = newest.pop(None, 0)
        with self._lock:
            for segment in set(self._threshold) | set(newest):
                threshold = self._threshold.get(segment, self._default)
                txid = max(newest.get(segment, 0), truncated if segment in self._threshold else 0)
                if txid >= threshold:
                    self._mark(segment, txid, own=False)
                elif segment in self._threshold:
                    self._threshold[segment] = max(threshold, upto)
            self._default = max(self._default, upto)
            self.verified_at = max(self.verified_at or 0.0, started_at)
