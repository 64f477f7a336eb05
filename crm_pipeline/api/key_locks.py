"""`KeyLocks`: one lock per name, kept only while someone holds or awaits it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _KeyLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holding or waiting


class KeyLocks:
    """Mutual exclusion per name; bounded by the threads using it, not by the names seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, _KeyLock] = {}

    def __len__(self) -> int:
        """How many names have a lock now (held or awaited)."""
        with self._lock:
            return len(self._locks)

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold `name`'s lock; the lock is dropped when nobody holds or awaits it."""
        with self._lock:
            entry = self._locks.get(name)
            if entry is None:
                entry = self._locks[name] = _KeyLock()
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[name]
