"""The cache worker's progress: how far it has read the change log, and what it still owes.

A change window `[since, upto)` is read once; its customer files are rebuilt in the same
snapshot, but its whole-table files (index, insights, summary) may be deferred to coalesce
bursts. The published watermark promises that every change below it has reached ALL its files
(`crm_pipeline.db.worker_state`), so a deferred file holds it at the start of the first window
that made the file stale, until the file is rebuilt.

Watermarks are xid8 values as decimal text; `None` means "from the very beginning".
"""

from __future__ import annotations

from dataclasses import dataclass

from crm_pipeline.cache.registry import CacheFile


@dataclass
class Deferred:
    """A whole-table file owed to the windows since `held_from`, to be rebuilt at `due`."""

    file: CacheFile
    held_from: str | None  # start of the first window whose change it does not reflect yet
    due: float  # monotonic seconds
    noticed_at: float | None  # when the first notification it owes arrived, for latency


def _earliest(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    return a if int(a) <= int(b) else b


class Progress:
    """The cursor of the next window and the files owed to windows already read."""

    def __init__(self, since: str | None) -> None:
        self.since = since
        self.owed: dict[str, Deferred] = {}  # by asset name

    def owe(
        self, file: CacheFile, window_since: str | None, due: float, noticed_at: float | None
    ) -> None:
        """`file` is stale by the window starting at `window_since`; rebuild it at `due`."""
        current = self.owed.get(file.asset)
        if current is None:
            self.owed[file.asset] = Deferred(file, window_since, due, noticed_at)
            return
        current.held_from = _earliest(current.held_from, window_since)
        current.due = min(current.due, due)
        if current.noticed_at is None:
            current.noticed_at = noticed_at

    def due(self, now: float) -> list[Deferred]:
        """The owed files whose time has come, in registry order of being owed."""
        return [d for d in self.owed.values() if d.due <= now]

    def paid(self, file: CacheFile) -> None:
        """`file` was rebuilt from a snapshot taken after every window read so far."""
        self.owed.pop(file.asset, None)

    def next_due(self) -> float | None:
        """When the earliest owed file is due (monotonic seconds), or None."""
        return min((d.due for d in self.owed.values()), default=None)

    def watermark(self) -> str | None:
        """Every change with txid below it has reached all its files (None: nothing yet)."""
        mark = self.since
        for owed in self.owed.values():
            mark = _earliest(mark, owed.held_from)
        return mark
