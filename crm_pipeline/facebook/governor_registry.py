"""Which governor paces a call: one per ad account, shared by every client of the process.

Meta rate-limits per ad account (and per app), so two clients calling the same account must
see each other's usage and throttles. :func:`governor_for` returns the process-wide governor of
an account; a :class:`GovernorRouter` is one client's view of those governors (its own stats
and wait budget), routing each request by the ``act_<id>`` in its path.

A registry is one app's view of Meta's limits: its governors share an
:class:`~crm_pipeline.facebook.governor_slots.AppState` (the ``max_calls_in_flight`` request
slots, the app's latest ``X-App-Usage`` and its code-4 throttle).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.governor_slots import AppState
from crm_pipeline.facebook.governor_stats import GovernorStats, StatsLedger
from crm_pipeline.facebook.ids import AD_ACCOUNT_NODE, account_node

__all__ = [
    "APP_SCOPE",
    "GovernorRegistry",
    "GovernorRouter",
    "account_key",
    "governor_for",
    "reset_governors",
]

# The scope of calls billed to no ad account (pages, lead forms): the app's own limits.
APP_SCOPE = "app"


def account_key(account_id: str | int | None) -> str:
    """The registry key of an account: ``act_<digits>`` (bare digits accepted); ``app`` for None."""
    return APP_SCOPE if account_id is None else account_node(account_id)


class GovernorRegistry:
    """One :class:`RateLimitGovernor` per key (ad account), created on first use.

    The latest settings passed to :meth:`get` win, so a process's governors follow its current
    configuration: the account's ``calls_per_account`` and the registry-wide
    ``max_calls_in_flight`` are resized in place (calls in flight keep their slots; new calls
    wait until the count is under the new limit). ``sleep``/``clock``/``rng_seed`` are for tests.
    """

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng_seed: int | None = None,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self._rng_seed = rng_seed
        self._lock = threading.Lock()
        self._governors: dict[str, RateLimitGovernor] = {}
        self._app = AppState(GovernorSettings().max_calls_in_flight)

    @property
    def app(self) -> AppState:
        """What every governor of this registry shares: app-wide slots, usage and throttle."""
        return self._app

    def get(
        self, account_id: str | int | None, settings: GovernorSettings | None = None
    ) -> RateLimitGovernor:
        """The governor of ``account_id`` (None: the app scope), with ``settings`` if given."""
        key = account_key(account_id)
        with self._lock:
            if settings is not None:
                self._app.slots.resize(settings.max_calls_in_flight)
            governor = self._governors.get(key)
            if governor is None:
                rng = random.Random(self._rng_seed) if self._rng_seed is not None else None
                governor = RateLimitGovernor(
                    settings, sleep=self.sleep, clock=self.clock, rng=rng, name=key, app=self._app
                )
                self._governors[key] = governor
            elif settings is not None and settings != governor.settings:
                governor.settings = settings
            return governor

    def reset(self) -> None:
        """Forget every governor and the app's state (tests; a fresh process starts empty)."""
        with self._lock:
            self._governors.clear()
            # Calls still in flight release the old slots, so the new ones start empty.
            self._app = AppState(self._app.slots.limit)


_REGISTRY = GovernorRegistry()


def governor_for(
    account_id: str | int | None, settings: GovernorSettings | None = None
) -> RateLimitGovernor:
    """The process-wide governor of an ad account (``act_1`` and ``1`` are the same account)."""
    return _REGISTRY.get(account_id, settings)


def reset_governors() -> None:
    """Forget the process-wide governors."""
    _REGISTRY.reset()


class GovernorRouter:
    """A client's view of the shared governors: routes each call to its account's governor.

    Calls on ``act_<id>/...`` go to that account's governor; nodes bound with :meth:`bind`
    (report runs) to their account's; anything else (pages, lead forms) to the ``app`` scope.
    :attr:`stats` counts this router's calls only, and the wait budget is this router's.
    """

    def __init__(
        self, registry: GovernorRegistry | None = None, settings: GovernorSettings | None = None
    ) -> None:
        self.registry = registry if registry is not None else _REGISTRY
        self.settings = settings if settings is not None else GovernorSettings()
        self._ledger = StatsLedger()
        self._lock = threading.Lock()
        self._bound: dict[str, str] = {}

    @property
    def stats(self) -> GovernorStats:
        """This router's calls, retries and waits (a snapshot)."""
        return self._ledger.snapshot()

    def for_account(self, account_id: str | int | None) -> RateLimitGovernor:
        """The shared governor of ``account_id``, under this router's settings."""
        return self.registry.get(account_id, self.settings)

    def bind(self, node_id: str, account_id: str | int) -> None:
        """Bill later calls on ``node_id`` (e.g. a report run id) to ``account_id``."""
        with self._lock:
            self._bound[str(node_id)] = account_key(account_id)

    def route(self, path: Any) -> tuple[RateLimitGovernor, StatsLedger]:
        """The governor and stats ledger of a request on ``path`` (the SDK's path tuple)."""
        return self.for_account(self._scope(path)), self._ledger

    def _scope(self, path: Any) -> str | None:
        if isinstance(path, str):
            # A full URL (the SDK's paging links are followed as tuples, but be tolerant).
            segments = path.split("?", 1)[0].split("/")
        else:
            segments = [str(p).strip("/") for p in path or ()]
        for segment in segments:
            if AD_ACCOUNT_NODE.match(segment):
                return segment
        with self._lock:
            for segment in segments:
                if segment in self._bound:
                    return self._bound[segment]
        return None
