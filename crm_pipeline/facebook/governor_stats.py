"""Counters of governed Graph API calls, shared safely between threads and governors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

__all__ = ["GovernorStats", "StatsLedger"]


@dataclass
class GovernorStats:
    """Counters of governed calls (a snapshot when read from ``.stats``).

    ``calls``: HTTP calls made (retries included); ``retries``: calls repeated after a failure;
    ``throttle_waits``: waits because Meta throttled (ours or another caller's of the same
    account); ``slowdowns``: pauses because usage was high; ``waited_seconds``: total time
    slept; ``page_size_reductions`` / ``page_size_restores``: ``limit`` halvings and
    doublings; ``max_usage_pct`` / ``last_usage_pct``: highest and latest usage seen.
    """

    calls: int = 0
    retries: int = 0
    throttle_waits: int = 0
    slowdowns: int = 0
    waited_seconds: float = 0.0
    page_size_reductions: int = 0
    page_size_restores: int = 0
    max_usage_pct: float = 0.0
    last_usage_pct: float = 0.0


class StatsLedger:
    """Thread-safe :class:`GovernorStats` that several governors may add to (one per client)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = GovernorStats()

    def add(self, **deltas: float) -> None:
        """Add ``deltas`` to the named counters."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    def usage(self, pct: float) -> None:
        """Record the usage percentage of the latest response."""
        with self._lock:
            self._stats.last_usage_pct = pct
            self._stats.max_usage_pct = max(self._stats.max_usage_pct, pct)

    @property
    def waited_seconds(self) -> float:
        """Seconds waited so far: what counts against the wait budget."""
        with self._lock:
            return self._stats.waited_seconds

    def snapshot(self) -> GovernorStats:
        """A copy of the counters as they are now."""
        with self._lock:
            return replace(self._stats)
