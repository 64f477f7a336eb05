"""What the API remembers between requests so a hit needs no database: the files it found
current (`Verified`) and the ids a build found absent (`Absent`), each map bounded (LRU).

See docs/architecture.md (cache-first reads) for how a file's threshold is raised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_REMEMBERED_ABSENT = 10_000  # remembered 404s, least recently used dropped first
MAX_VERIFIED = 100_000  # files remembered as checked (a few dozen bytes each), LRU


@dataclass(frozen=True)
class Verified:
    """A file (by watermark) known current below `since`: no relevant change exists under it.

    `own_reflected`: the own-write sequence the file is known to include (see
    `RecentChanges.own_sequence`).
    """

    watermark: int
    since: int
    own_reflected: int = 0


@dataclass(frozen=True)
class Absent:
    """A key a build found absent: no relevant change below `since` as of `found_at`."""

    since: int
    found_at: float  # monotonic
    own_reflected: int


class FreshnessMemory:
    """The `Verified` and `Absent` entries by key name; thread-safe, each map bounded."""

    def __init__(
        self, max_absent: int = MAX_REMEMBERED_ABSENT, max_verified: int = MAX_VERIFIED
    ) -> None:
        self.max_absent = max_absent
        self.max_verified = max_verified
        self._lock = threading.Lock()
        self._absent: OrderedDict[str, Absent] = OrderedDict()
        self._verified: OrderedDict[str, Verified] = OrderedDict()

    def absent_names(self) -> list[str]:
        """The names remembered as absent, least recently used first."""
        with self._lock:
            return list(self._absent)

    def verified(self, name: str) -> Verified | None:
        """What is known about `name`'s file, if anything (marks it recently used)."""
        with self._lock:
            entry = self._verified.get(name)
            if entry is not None:
                self._verified.move_to_end(name)
            return entry

    def remember_verified(self, name: str, entry: Verified) -> None:
        """Record `entry`, merged with what is known of the same file (same watermark)."""
        with self._lock:
            current = self._verified.get(name)
            if current is not None and current.watermark == entry.watermark:
                # Two answers about the same file: keep the most each one learned.
                entry = Verified(
                    entry.watermark,
                    max(entry.since, current.since),
                    max(entry.own_reflected, current.own_reflected),
                )
            self._verified[name] = entry
            self._verified.move_to_end(name)
            while len(self._verified) > self.max_verified:
                self._verified.popitem(last=False)

    def absent(self, name: str) -> Absent | None:
        """The remembered absence of `name`, if any (marks it recently used)."""
        with self._lock:
            entry = self._absent.get(name)
            if entry is not None:
                self._absent.move_to_end(name)
            return entry

    def remember_absent(self, name: str, entry: Absent) -> None:
        """Record that `name` does not exist (and forget any file known for it)."""
        with self._lock:
            self._verified.pop(name, None)
            self._absent[name] = entry
            self._absent.move_to_end(name)
            while len(self._absent) > self.max_absent:
                self._absent.popitem(last=False)

    def raise_absent(self, name: str, entry: Absent, since: int) -> None:
        """Raise `entry`'s threshold to `since`, unless it was replaced meanwhile."""
        with self._lock:
            if self._absent.get(name) is entry:
                self._absent[name] = Absent(since, entry.found_at, entry.own_reflected)

    def forget_absent(self, name: str) -> None:
        """`name` exists (again)."""
        with self._lock:
            self._absent.pop(name, None)
