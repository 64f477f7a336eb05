"""`SortedChunks`: a sorted list kept in chunks, for the API's in-memory customer index.

One Python list of a million items costs O(n) per insert or removal (every later pointer
moves); chunks of about `CHUNK` items cost O(log n + CHUNK) instead, while a lookup stays a
binary search and a walk from any position stays a plain list iteration. The same idea as
`sortedcontainers.SortedList`, cut down to what the index needs (that package is not a
dependency of the product).

Not thread-safe: the index guards it with its own lock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Any

CHUNK = 1024  # items per chunk after a split or a bulk load; a chunk splits at twice this


class SortedChunks:
    """Items kept in ascending order (items must be mutually comparable)."""

    def __init__(self, items: Iterable[Any] = (), *, presorted: bool = False) -> None:
        ordered = list(items) if presorted else sorted(items)
        self._chunks: list[list[Any]] = [
            ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)
        ]
        self._maxes: list[Any] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._chunks:
            yield from chunk

    def add(self, item: Any) -> None:
        """Insert `item` in order."""
        if not self._chunks:
            self._chunks, self._maxes = [[item]], [item]
        else:
            i = min(bisect_left(self._maxes, item), len(self._maxes) - 1)
            chunk = self._chunks[i]
            insort(chunk, item)
            self._maxes[i] = chunk[-1]
            if len(chunk) > 2 * CHUNK:
                self._chunks[i : i + 1] = [chunk[:CHUNK], chunk[CHUNK:]]
                self._maxes[i : i + 1] = [chunk[CHUNK - 1], chunk[-1]]
        self._len += 1

    def discard(self, item: Any) -> bool:
        """Remove one `item` (True), or do nothing when it is not there (False)."""
        i = bisect_left(self._maxes, item)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, item)
        if j == len(chunk) or chunk[j] != item:
            return False
        del chunk[j]
        if chunk:
            self._maxes[i] = chunk[-1]
        else:
            del self._chunks[i], self._maxes[i]
        self._len -= 1
        return True

    def between(self, low: Any, high: Any) -> list[Any]:
        """The items at or after `low` and before `high`, ascending (sliced, not walked)."""
        i, j = bisect_left(self._maxes, low), bisect_left(self._maxes, high)
        if i == len(self._chunks) or not low < high:
            return []
        start = bisect_left(self._chunks[i], low)
        if j == len(self._chunks):
            j, end = j - 1, len(self._chunks[j - 1])
        else:
            end = bisect_left(self._chunks[j], high)
        if j == i:
            return self._chunks[i][start:end]
        found = self._chunks[i][start:]
        for chunk in self._chunks[i + 1 : j]:
            found += chunk
        return found + self._chunks[j][:end]

    def count(self, low: Any, high: Any) -> int:
        """How many items are at or after `low` and before `high` (without walking them: the
        chunks in between count by their lengths)."""
        i, j = bisect_left(self._maxes, low), bisect_left(self._maxes, high)
        if i == len(self._chunks) or not low < high:
            return 0
        start = bisect_left(self._chunks[i], low)
        if j == len(self._chunks):
            end_chunk, end = j - 1, len(self._chunks[j - 1])
        else:
            end_chunk, end = j, bisect_left(self._chunks[j], high)
        if end_chunk == i:
            return max(0, end - start)
        between = sum(map(len, self._chunks[i + 1 : end_chunk]))
        return len(self._chunks[i]) - start + between + end

    def from_(self, item: Any) -> Iterator[Any]:
        """The items at or after `item`, ascending."""
        i = bisect_left(self._maxes, item)
        if i == len(self._maxes):
            return
        first = self._chunks[i]
        yield from first[bisect_left(first, item) :]
        for chunk in self._chunks[i + 1 :]:
            yield from chunk

    def after(self, item: Any | None) -> Iterator[Any]:
        """The items after `item` (None: all), ascending."""
        if item is None:
            yield from self
            return
        i = bisect_right(self._maxes, item)
        if i == len(self._maxes):
            return
        first = self._chunks[i]
        yield from first[bisect_right(first, item) :]
        for chunk in self._chunks[i + 1 :]:
            yield from chunk

    def before(self, item: Any | None) -> Iterator[Any]:
        """The items before `item` (None: all), descending."""
        if item is None:
            i, j = len(self._chunks) - 1, None
        else:
            i = bisect_left(self._maxes, item)
            if i == len(self._maxes):
                i, j = i - 1, None
            else:
                j = bisect_left(self._chunks[i], item)
        if i < 0:
            return
        first = self._chunks[i]
        yield from reversed(first if j is None else first[:j])
        for chunk in reversed(self._chunks[:i]):
            yield from reversed(chunk)
