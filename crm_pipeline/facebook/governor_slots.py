"""What the governors of one app share: request slots, the app's usage and its throttle.

Meta limits each ad account *and* the app as a whole. Each
:class:`~crm_pipeline.facebook.governor.RateLimitGovernor` paces its own account; an
:class:`AppState`, owned by the :class:`~crm_pipeline.facebook.governor_registry.GovernorRegistry`
and handed to every governor it creates, carries what concerns them all:

- the app-wide :class:`Slots` (``max_calls_in_flight`` requests in flight across the process);
- the latest ``X-App-Usage`` percentage, which every account paces on;
- the end of an app-level throttle (code 4), which every account waits out.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator

__all__ = ["APP_THROTTLE_CODES", "APP_USAGE_HEADER", "AppState", "Slots"]

# "Application request limit reached": the whole app is throttled, not one ad account. The other
# throttling codes (17, 32, 613, 80000-80014) are per account (or page) and block only its scope.
APP_THROTTLE_CODES = frozenset({4})
# The header that reports the app's own usage (lower case, as in ``Usage.by_header``).
APP_USAGE_HEADER = "x-app-usage"


class Slots:
    """At most ``limit`` holders at once, admitted first come, first served; the limit can
    change.

    A released slot is handed to the longest waiter, never to whoever asks next: a thread that
    releases a slot and asks again straight away (an account paging through its cursor) holds
    the GIL while the waiters it woke have not run yet, and with a plain semaphore it would win
    every time, so the first ``limit`` accounts would take every slot until they finished and
    the others would wait in line (an agency's 20 accounts read 8 at a time instead of side by
    side, and the other streams starved for as long).

    :meth:`resize` changes the limit in place rather than swapping in a new semaphore, so calls
    already in flight are counted against the new limit: growing lets waiters in at once,
    shrinking never interrupts a call but admits no new one until the count is below the new
    limit.
    """

    def __init__(self, limit: int) -> None:
        self._check(limit)
        self._limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()
        # Waiters in arrival order; a released slot goes to the first.
        self._queue: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"Slots(in_flight={self._in_flight}, limit={self._limit})"

    @property
    def limit(self) -> int:
        """How many holders may hold a slot at once."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """How many slots are held right now."""
        with self._lock:
            return self._in_flight

    @property
    def waiting(self) -> int:
        """How many callers are waiting for a slot."""
        with self._lock:
            return len(self._queue)

    def resize(self, limit: int) -> None:
        """Change the limit; holders keep their slots, waiters are admitted at once if it grew."""
        self._check(limit)
        with self._lock:
            self._limit = limit
            self._admit()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block, waiting behind earlier callers first."""
        self._acquire()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._admit()

    def _acquire(self) -> None:
        with self._lock:
            if not self._queue and self._in_flight < self._limit:
                self._in_flight += 1
                return
            waiter = _Waiter()
            self._queue.append(waiter)
        try:
            waiter.admitted.wait()
        except BaseException:
            # Interrupted while waiting: give back a slot handed over meanwhile, or leave.
            with self._lock:
                if waiter.admitted.is_set():
                    self._in_flight -= 1
                    self._admit()
                else:
                    self._queue.remove(waiter)
            raise

    def _admit(self) -> None:
        """Hand free slots to the longest waiters (call with the lock held)."""
        while self._queue and self._in_flight < self._limit:
            self._in_flight += 1
            self._queue.popleft().admitted.set()

    @staticmethod
    def _check(limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a slot limit must be at least 1, got {limit}")


class _Waiter:
    """One caller waiting for a slot; set once a slot has been handed to it."""

    __slots__ = ("admitted",)

    def __init__(self) -> None:
        self.admitted = threading.Event()


class AppState:
    """The state every governor of one app shares (thread-safe).

    ``slots`` caps the requests in flight across all of them; :meth:`observe_usage` and
    :meth:`block_until` record what one account's response said about the whole app, and
    :meth:`snapshot` is what the next call of any account paces on. Times are on the clock of
    the governors sharing it (one registry's governors share one clock).
    """

    def __init__(self, max_calls_in_flight: int) -> None:
        self.slots = Slots(max_calls_in_flight)
        self._lock = threading.Lock()
        self._usage_pct = 0.0
        self._blocked_until = float("-inf")

    def __repr__(self) -> str:
        return f"AppState(usage={self._usage_pct:g}%, slots={self.slots!r})"

    def observe_usage(self, pct: float) -> None:
        """Record the app's latest usage (``X-App-Usage``); the latest wins, as Meta's window
        rolls and a lower figure means the app has recovered."""
        with self._lock:
            self._usage_pct = pct

    def block_until(self, when: float) -> None:
        """Make every governor wait until ``when`` before its next call (an app throttle)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, when)

    def snapshot(self) -> tuple[float, float]:
        """The app's latest usage percentage and the end of its throttle (-inf: none)."""
        with self._lock:
            return self._usage_pct, self._blocked_until
