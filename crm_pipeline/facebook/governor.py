"""The rate-limit governor: pace, back off and retry the Graph API calls of one scope.

Every SDK request goes through :meth:`RateLimitGovernor.call`, which

- reads the usage headers (:mod:`~crm_pipeline.facebook.usage_headers`) of successes *and*
  errors and slows down before the next call once usage passes ``slow_down_at_pct`` (longer the
  closer it gets to 100%);
- waits on throttling codes (4, 17, 32, 613, 80000-80014), honouring Meta's
  ``estimated_time_to_regain_access`` (minutes), and then retries instead of failing;
- retries codes 1 and 2, HTTP 5xx and dropped connections with jittered exponential backoff,
  at most ``max_retries`` times;
- halves the request's ``limit`` on "Please reduce the amount of data" (code 1, HTTP 500) and
  restores it step by step after successes (:mod:`~crm_pipeline.facebook.page_size`);
- fails at once on an invalid token (190) or a permission error (10, 200-299);
- raises :class:`RateLimitBudgetExceeded` rather than wait past ``max_wait_seconds`` in total;
- holds a request slot of its scope (``calls_per_account``) and one of the app
  (``max_calls_in_flight``) around each ``send()`` only, never while it waits, so a throttled
  account does not take slots from the others.

The governors of one registry share an :class:`~crm_pipeline.facebook.governor_slots.AppState`:
the app-wide slots, the latest ``X-App-Usage`` (every account paces on the higher of its own
usage and the app's) and the app-level throttle (code 4 blocks every account; the other codes
only the account that got them).

What each error means is decided in :mod:`~crm_pipeline.facebook.error_kinds`; which governor
a call goes to (one per ad account, shared process-wide) in
:mod:`~crm_pipeline.facebook.governor_registry`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from crm_pipeline.facebook.error_kinds import FATAL_KINDS, Failure, classify_error
from crm_pipeline.facebook.errors import RateLimitBudgetExceeded
from crm_pipeline.facebook.governor_settings import MAX_WAIT_ENV, GovernorSettings
from crm_pipeline.facebook.governor_slots import (
    APP_THROTTLE_CODES,
    APP_USAGE_HEADER,
    AppState,
    Slots,
)
from crm_pipeline.facebook.governor_stats import GovernorStats, StatsLedger
from crm_pipeline.facebook.page_size import PageSizes
from crm_pipeline.facebook.usage_headers import Usage, parse_usage

__all__ = ["RateLimitGovernor"]

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class _Tries:
    """Failures of one governed call so far: throttles and other retries have separate caps."""

    retries: int = 0
    throttles: int = 0


class RateLimitGovernor:
    """Paces, retries and backs off the calls of one rate-limit scope (e.g. one ad account).

    Thread-safe: concurrent callers share the observed usage and throttle state, so when one
    caller is told to wait, the others wait too. ``app`` is the state shared with the other
    governors of the same app (the registry passes its own); a governor created alone gets its
    own. ``sleep``, ``clock`` and ``rng`` are injectable for tests (a fake ``sleep`` should
    advance the fake ``clock``).
    """

    def __init__(
        self,
        settings: GovernorSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        name: str | None = None,
        app: AppState | None = None,
    ) -> None:
        settings = settings if settings is not None else GovernorSettings()
        self._slots = Slots(settings.calls_per_account)
        # Only a governor's own app state follows its settings: a shared one is the registry's.
        self._owns_app = app is None
        self._app = app if app is not None else AppState(settings.max_calls_in_flight)
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.name = name
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._ledger = StatsLedger()
        self._usage_pct = 0.0
        self._blocked_until = float("-inf")
        self._pages = PageSizes()

    def __repr__(self) -> str:
        return f"RateLimitGovernor(name={self.name!r}, usage={self._usage_pct:g}%)"

    @property
    def settings(self) -> GovernorSettings:
        """How patient this governor is; setting it resizes the request slots."""
        return self._settings

    @settings.setter
    def settings(self, settings: GovernorSettings) -> None:
        # Resized in place: calls in flight keep their slots and count against the new limit.
        self._slots.resize(settings.calls_per_account)
        if self._owns_app:
            self._app.slots.resize(settings.max_calls_in_flight)
        self._settings = settings

    @property
    def app(self) -> AppState:
        """The state shared with the other governors of the app (slots, usage, throttle)."""
        return self._app

    @property
    def stats(self) -> GovernorStats:
        """A snapshot of every call this governor has made, whoever asked for it."""
        return self._ledger.snapshot()

    @property
    def usage_pct(self) -> float:
        """The highest usage percentage in the latest response's headers."""
        with self._lock:
            return self._usage_pct

    @property
    def pacing_pct(self) -> float:
        """The usage the next call paces on: the higher of this scope's and the app's."""
        return max(self.usage_pct, self._app.snapshot()[0])

    # -- rules -----------------------------------------------------------------------------------

    def observe(self, headers: Any, ledger: StatsLedger | None = None) -> Usage:
        """Record a response's usage headers (success or error); the app's usage is shared."""
        usage = parse_usage(headers)
        if usage.by_header:
            with self._lock:
                self._usage_pct = usage.pct
            app_pct = usage.by_header.get(APP_USAGE_HEADER)
            if app_pct is not None:
                self._app.observe_usage(app_pct)
            for target in self._ledgers(ledger):
                target.usage(usage.pct)
        return usage

    def slow_down_seconds(self, pct: float | None = None) -> float:
        """The pause before the next call at ``pct`` percent usage (default: :attr:`pacing_pct`)."""
        if pct is None:
            pct = self.pacing_pct
        start = self.settings.slow_down_at_pct
        if pct < start:
            return 0.0
        share = 1.0 if start >= 100 else min(1.0, (pct - start) / (100.0 - start))
        # Never zero once past the threshold: even at exactly 75% the next call is paced.
        share = max(share, 0.01)
        return share * self.settings.slow_down_factor * self.settings.base_backoff_seconds

    def backoff_seconds(self, attempt: int) -> float:
        """Jittered exponential backoff for the ``attempt``-th retry (0-based)."""
        s = self.settings
        base = min(s.max_backoff_seconds, s.base_backoff_seconds * (2 ** min(attempt, 60)))
        with self._lock:
            factor = 1.0 + self._rng.uniform(-s.jitter, s.jitter)
        return min(s.max_backoff_seconds, base * factor)

    def throttle_seconds(self, usage: Usage, attempt: int) -> float:
        """How long to wait after a throttle: Meta's estimate when it gives one, else backoff."""
        if usage.eta_seconds > 0:
            return usage.eta_seconds
        if usage.reset_seconds > 0:
            return usage.reset_seconds
        return self.backoff_seconds(attempt)

    # -- the loop --------------------------------------------------------------------------------

    def call(
        self,
        send: Callable[[], T],
        *,
        params: dict | None = None,
        ledger: StatsLedger | None = None,
    ) -> T:
        """Run ``send()`` under the rules: pace, retry, back off, shrink ``params['limit']``.

        ``params`` is the request's parameter dict (mutated in place on reduce-data errors, so
        a cursor holding it keeps the smaller page size). ``ledger`` also receives the stats and
        carries the wait budget; without one the governor's own lifetime stats do.
        """
        budget = ledger if ledger is not None else self._ledger
        tries = _Tries()
        pace = True
        while True:
            self._pause_before_call(budget, ledger, slow_down=pace)
            self._count(ledger, calls=1)
            try:
                response = self._send(send)
            except Exception as exc:
                failure = classify_error(exc)
                if failure is None or not self._recover(
                    exc, failure, tries, params, budget, ledger
                ):
                    raise
                # Right after waiting out a throttle the usage we saw is stale: do not pace on it.
                pace = failure.kind != "throttle"
                continue
            self.observe(_response_headers(response), ledger)
            if self._pages.succeeded(params, self.settings.restore_page_size_after):
                self._count(ledger, page_size_restores=1)
            return response

    def _recover(
        self,
        exc: BaseException,
        failure: Failure,
        tries: _Tries,
        params: dict | None,
        budget: StatsLedger,
        ledger: StatsLedger | None,
    ) -> bool:
        """Wait as ``failure`` asks and return True to retry; False to give up."""
        usage = self.observe(failure.headers, ledger)
        if failure.kind in FATAL_KINDS:
            return False
        if failure.kind == "throttle":
            tries.throttles += 1
            if tries.throttles > self.settings.max_throttle_waits:
                _note_attempts(exc, tries.retries + tries.throttles - 1)
                return False
            wait = self.throttle_seconds(usage, tries.throttles - 1)
            self._wait(wait, budget, ledger, failure=failure, usage=usage, block=True)
            self._count(ledger, retries=1, throttle_waits=1)
            return True
        tries.retries += 1
        if tries.retries > self.settings.max_retries:
            _note_attempts(exc, tries.retries - 1 + tries.throttles)
            return False
        if failure.kind == "reduce_data" and self._pages.shrink(
            params, self.settings.min_page_size
        ):
            self._count(ledger, page_size_reductions=1)
            wait = 0.0  # a smaller request is the fix, not waiting
        else:
            wait = self.backoff_seconds(tries.retries - 1)
        self._wait(wait, budget, ledger, failure=failure)
        self._count(ledger, retries=1)
        return True

    # -- internals -------------------------------------------------------------------------------

    def _send(self, send: Callable[[], T]) -> T:
        """``send()`` holding a slot of this scope, then one of the app.

        Only around the request: every wait (slow-down, backoff, throttle) happens outside, so
        a sleeping account holds no slot. Always this order, and a thread holding an app slot
        never waits for a scope slot, so two governors cannot deadlock.
        """
        with self._slots.held(), self._app.slots.held():
            return send()

    def _ledgers(self, ledger: StatsLedger | None) -> tuple[StatsLedger, ...]:
        if ledger is None or ledger is self._ledger:
            return (self._ledger,)
        return (self._ledger, ledger)

    def _count(self, ledger: StatsLedger | None, **deltas: float) -> None:
        for target in self._ledgers(ledger):
            target.add(**deltas)

    def _pause_before_call(
        self, budget: StatsLedger, ledger: StatsLedger | None, *, slow_down: bool = True
    ) -> None:
        with self._lock:
            own_until, usage = self._blocked_until, self._usage_pct
        app_usage, app_until = self._app.snapshot()
        blocked = max(own_until, app_until) - self.clock()
        if blocked > 0:
            # Another caller of this scope (or, for code 4, of any scope) was throttled: wait
            # out what Meta told it.
            which = "app-wide" if app_until > own_until else "shared"
            self._wait(blocked, budget, ledger, reason=f"throttled ({which})")
            self._count(ledger, throttle_waits=1)
            slow_down = False
        pct = max(usage, app_usage)
        pause = self.slow_down_seconds(pct) if slow_down else 0.0
        if pause > 0:
            whose = " (app)" if app_usage > usage else ""
            self._wait(pause, budget, ledger, reason=f"usage at {pct:g}%{whose}")
            self._count(ledger, slowdowns=1)

    def _wait(
        self,
        seconds: float,
        budget: StatsLedger,
        ledger: StatsLedger | None,
        *,
        failure: Failure | None = None,
        usage: Usage | None = None,
        reason: str | None = None,
        block: bool = False,
    ) -> None:
        if seconds <= 0:
            return
        limit = self.settings.max_wait_seconds
        waited = budget.waited_seconds
        if waited + seconds > limit:
            raise _budget_exceeded(self.name, seconds, waited, limit, failure, usage, reason)
        if block:
            until = self.clock() + seconds
            with self._lock:
                self._blocked_until = max(self._blocked_until, until)
            if failure is not None and failure.code in APP_THROTTLE_CODES:
                # The app as a whole is throttled: every account of the registry waits it out.
                self._app.block_until(until)
        self._count(ledger, waited_seconds=seconds)
        if failure is not None:
            code = f" code {failure.code}" if failure.code is not None else ""
            why = f"{failure.kind}{code}"
        else:
            why = reason or "pacing"
        # Dagster shows these in the run's log (dagster.yaml python_logs); never the token.
        log.log(
            logging.WARNING if failure is not None and failure.kind == "throttle" else logging.INFO,
            "graph api %s: waiting %s (%s; %s waited so far)",
            self.name or "scope",
            _fmt_seconds(seconds),
            why,
            _fmt_seconds(waited),
            extra={"graph_scope": self.name, "wait_seconds": round(seconds, 3), "reason": why},
        )
        self.sleep(seconds)


def _budget_exceeded(
    name: str | None,
    seconds: float,
    waited: float,
    limit: float,
    failure: Failure | None,
    usage: Usage | None,
    reason: str | None,
) -> RateLimitBudgetExceeded:
    """The error that ends a run whose next wait would not fit its budget."""
    if failure is not None and failure.kind == "throttle":
        what = f"Meta throttled the request (code {failure.code})"
        if usage is not None and usage.eta_seconds > 0:
            what += f" and asked to wait {_fmt_seconds(usage.eta_seconds)}"
        else:
            what += f" and the next backoff is {_fmt_seconds(seconds)}"
    elif failure is not None:
        what = (
            f"the Graph API kept failing (code {failure.code}, HTTP {failure.http_status}) "
            f"and the next backoff is {_fmt_seconds(seconds)}"
        )
    else:
        what = f"the governor had to pause {_fmt_seconds(seconds)} ({reason})"
    scope = f" for {name}" if name else ""
    message = (
        f"Graph API rate-limit wait budget exceeded{scope}: {what}, but this run has "
        f"already waited {_fmt_seconds(waited)} of its {_fmt_seconds(limit)} budget. "
        f"Stopping so the next run can resume from its checkpoint; raise {MAX_WAIT_ENV} "
        "to wait longer."
    )
    return RateLimitBudgetExceeded(
        message,
        requested_seconds=seconds,
        waited_seconds=waited,
        max_wait_seconds=limit,
        code=failure.code if failure else None,
        subcode=failure.subcode if failure else None,
        http_status=failure.http_status if failure else None,
    )


def _note_attempts(exc: BaseException, retries: int) -> None:
    """Tell the client's error wrapper how many retries were spent before giving up."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.governor_retries = retries  # type: ignore[attr-defined]


def _response_headers(response: Any) -> Any:
    headers = getattr(response, "headers", None)
    if callable(headers):
        headers = headers()
    return headers


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"
