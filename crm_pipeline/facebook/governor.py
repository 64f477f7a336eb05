"""A rate-limit governor for Graph API calls: read Meta's usage headers, pace, back off, retry.

Every SDK request goes through :meth:`RateLimitGovernor.call`, which

- reads the usage headers (``X-Business-Use-Case-Usage``, ``X-Ad-Account-Usage``,
  ``X-App-Usage``, ``x-fb-ads-insights-throttle``) of successes *and* errors, tolerating
  malformed values, and slows down before the next call once usage passes
  ``slow_down_at_pct`` (longer the closer it gets to 100%);
- waits on throttling codes (4, 17, 32, 613, 80000-80014), honouring Meta's
  ``estimated_time_to_regain_access`` (minutes) and then retries instead of failing;
- retries codes 1 and 2, HTTP 5xx and dropped connections with jittered exponential backoff,
  at most ``max_retries`` times;
- halves the request's ``limit`` on "Please reduce the amount of data" (code 1, HTTP 500) and
  restores it step by step after successes;
- fails at once on an invalid token (190) or a permission error (10, 200-299);
- raises :class:`RateLimitBudgetExceeded` rather than wait past ``max_wait_seconds`` in total.

Governors hold the state of one rate-limit scope (an ad account); :func:`governor_for` returns
the process-wide governor of an account, so every client calling that account shares it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import requests

from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded

__all__ = [
    "APP_SCOPE",
    "BACKOFF_BASE_ENV",
    "MAX_RETRIES_ENV",
    "MAX_WAIT_ENV",
    "PERMISSION_CODES",
    "SLOW_DOWN_ENV",
    "THROTTLE_CODES",
    "TOKEN_CODES",
    "Failure",
    "GovernorRegistry",
    "GovernorRouter",
    "GovernorSettings",
    "GovernorStats",
    "GraphApiError",
    "RateLimitBudgetExceeded",
    "RateLimitGovernor",
    "StatsLedger",
    "Usage",
    "account_key",
    "classify_error",
    "governor_for",
    "parse_usage",
    "reset_governors",
]

T = TypeVar("T")

MAX_WAIT_ENV = "CRM_GRAPH_MAX_WAIT_SECONDS"
BACKOFF_BASE_ENV = "CRM_GRAPH_BACKOFF_BASE_SECONDS"
MAX_RETRIES_ENV = "CRM_GRAPH_MAX_RETRIES"
SLOW_DOWN_ENV = "CRM_GRAPH_SLOW_DOWN_AT_PCT"

# Meta's rate-limit codes: app (4), user/ad account (17), page (32), API-specific (613) and the
# Business Use Case family 80000-80014.
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
# 190: invalid/expired/revoked access token; 102: invalid session.
TOKEN_CODES = frozenset({102, 190})
# 10: permission denied; 200-299: missing permission (ads_read, leads_retrieval, ...).
PERMISSION_CODES = frozenset({10, *range(200, 300)})
_REDUCE_DATA = "reduce the amount of data"
# Meta's page size when a request names none.
_DEFAULT_PAGE_SIZE = 25
_RETRYABLE_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)

log = logging.getLogger(__name__)


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GovernorSettings:
    """How patient the governor is. :meth:`from_env` reads the ``CRM_GRAPH_*`` overrides.

    ``max_wait_seconds`` is the total a run (one client, or one explicit governor) may spend
    waiting on rate limits, backoffs and slow-downs; a wait that would go past it raises
    :class:`RateLimitBudgetExceeded` instead. The slow-down pause grows linearly from 0 at
    ``slow_down_at_pct`` to ``slow_down_factor * base_backoff_seconds`` at 100% usage.
    """

    slow_down_at_pct: float = 75.0
    slow_down_factor: float = 30.0
    base_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    max_retries: int = 8
    max_throttle_waits: int = 100
    max_wait_seconds: float = 900.0
    jitter: float = 0.25
    min_page_size: int = 1
    restore_page_size_after: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.slow_down_at_pct <= 100:
            raise ValueError(f"slow_down_at_pct must be in (0, 100], got {self.slow_down_at_pct}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        for name in (
            "base_backoff_seconds",
            "max_backoff_seconds",
            "max_wait_seconds",
            "slow_down_factor",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("max_retries", "max_throttle_waits"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.min_page_size < 1 or self.restore_page_size_after < 1:
            raise ValueError("min_page_size and restore_page_size_after must be at least 1")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> GovernorSettings:
        """Defaults, overridden by the environment, then by ``overrides``.

        Variables: ``CRM_GRAPH_MAX_WAIT_SECONDS``, ``CRM_GRAPH_BACKOFF_BASE_SECONDS``,
        ``CRM_GRAPH_MAX_RETRIES`` and ``CRM_GRAPH_SLOW_DOWN_AT_PCT``.
        """
        from crm_pipeline.config import ConfigError, load_settings

        try:
            graph = load_settings(environ).graph
        except ConfigError as error:
            raise ValueError(str(error)) from None
        values: dict[str, Any] = {
            "max_wait_seconds": graph.max_wait_seconds,
            "base_backoff_seconds": graph.base_backoff_seconds,
            "max_retries": graph.max_retries,
            "slow_down_at_pct": graph.slow_down_at_pct,
        }
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"invalid Graph API governor settings: {error}") from None


# -- usage headers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What one response's usage headers say.

    ``pct`` is the highest percentage of any quota in any header (0 when there are none),
    ``eta_seconds`` the longest ``estimated_time_to_regain_access`` (Meta reports minutes),
    ``reset_seconds`` the ad account's ``reset_time_duration`` (seconds) and ``by_header`` the
    highest percentage per header (lower-case names).
    """

    pct: float = 0.0
    eta_seconds: float = 0.0
    reset_seconds: float = 0.0
    by_header: Mapping[str, float] | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _lower_headers(headers: Any) -> dict[str, Any]:
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        return {str(k).lower(): v for k, v in items}
    except (TypeError, ValueError):
        return {}


def _max_of(entry: Any, keys: tuple[str, ...]) -> float | None:
    if not isinstance(entry, Mapping):
        return None
    numbers = [n for n in (_number(entry.get(k)) for k in keys) if n is not None]
    return max(numbers) if numbers else None


_PCT_KEYS = ("call_count", "total_cputime", "total_time")


def parse_usage(headers: Any) -> Usage:
    """Read Meta's usage headers (any case; malformed or missing values are ignored)."""
    lowered = _lower_headers(headers)
    by_header: dict[str, float] = {}
    eta_minutes = 0.0
    reset = 0.0

    app = _max_of(_json(lowered.get("x-app-usage")), _PCT_KEYS)
    if app is not None:
        by_header["x-app-usage"] = app

    account = _json(lowered.get("x-ad-account-usage"))
    pct = _max_of(account, ("acc_id_util_pct",))
    if pct is not None:
        by_header["x-ad-account-usage"] = pct
    if isinstance(account, Mapping):
        reset = _number(account.get("reset_time_duration")) or 0.0

    buc = _json(lowered.get("x-business-use-case-usage"))
    if isinstance(buc, Mapping):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                pct = _max_of(entry, _PCT_KEYS)
                if pct is not None:
                    by_header["x-business-use-case-usage"] = max(
                        pct, by_header.get("x-business-use-case-usage", 0.0)
                    )
                if isinstance(entry, Mapping):
                    eta = _number(entry.get("estimated_time_to_regain_access"))
                    eta_minutes = max(eta_minutes, eta or 0.0)

    insights = _max_of(
        _json(lowered.get("x-fb-ads-insights-throttle")), ("app_id_util_pct", "acc_id_util_pct")
    )
    if insights is not None:
        by_header["x-fb-ads-insights-throttle"] = insights

    return Usage(
        pct=max(by_header.values(), default=0.0),
        eta_seconds=eta_minutes * 60.0,
        reset_seconds=reset,
        by_header=by_header,
    )


# -- error classification --------------------------------------------------------------------------

FATAL_KINDS = frozenset({"token", "permission", "fatal"})


@dataclass(frozen=True)
class Failure:
    """A failed call as the governor sees it.

    ``kind`` is ``throttle``, ``reduce_data``, ``transient``, ``token``, ``permission`` or
    ``fatal`` (anything else: a bad request, an unknown object).
    """

    kind: str
    code: int | None = None
    subcode: int | None = None
    http_status: int | None = None
    headers: Mapping[str, Any] | None = None


def _attr(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    try:
        return value() if callable(value) else value
    except Exception:  # a half-parsed SDK error must not break classification
        return None


def classify_error(exc: BaseException) -> Failure | None:
    """Classify an SDK ``FacebookRequestError`` (or anything shaped like one) or a requests
    error; None for exceptions the governor knows nothing about (they propagate untouched)."""
    if isinstance(exc, _RETRYABLE_NETWORK_ERRORS):
        return Failure("transient")
    if isinstance(exc, requests.RequestException):
        return Failure("fatal")
    if not hasattr(exc, "api_error_code"):
        return None
    code = _attr(exc, "api_error_code")
    subcode = _attr(exc, "api_error_subcode")
    status = _attr(exc, "http_status")
    message = str(_attr(exc, "api_error_message") or "")
    transient = bool(_attr(exc, "api_transient_error"))
    headers = _attr(exc, "http_headers") or {}
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    status = status if isinstance(status, int) and not isinstance(status, bool) else None

    if code in TOKEN_CODES:
        kind = "token"
    elif code in PERMISSION_CODES:
        kind = "permission"
    elif code in THROTTLE_CODES or status == 429:
        kind = "throttle"
    elif code == 1 and _REDUCE_DATA in message.lower():
        kind = "reduce_data"
    elif code in (1, 2) or (status is not None and status >= 500) or transient:
        kind = "transient"
    else:
        kind = "fatal"
    return Failure(kind, code, subcode if isinstance(subcode, int) else None, status, headers)


# -- stats -----------------------------------------------------------------------------------------


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
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    def usage(self, pct: float) -> None:
        with self._lock:
            self._stats.last_usage_pct = pct
            self._stats.max_usage_pct = max(self._stats.max_usage_pct, pct)

    @property
    def waited_seconds(self) -> float:
        with self._lock:
            return self._stats.waited_seconds

    def snapshot(self) -> GovernorStats:
        with self._lock:
            return replace(self._stats)


# -- the governor ----------------------------------------------------------------------------------


@dataclass
class _PageState:
    params: dict  # kept alive so its id() stays unique while tracked
    original: int
    successes: int = 0


def _response_headers(response: Any) -> Any:
    headers = getattr(response, "headers", None)
    if callable(headers):
        headers = headers()
    return headers


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"


class RateLimitGovernor:
    """Paces, retries and backs off the calls of one rate-limit scope (e.g. one ad account).

    Thread-safe: concurrent callers share the observed usage and throttle state, so when one
    caller is told to wait, the others wait too. ``sleep``, ``clock`` and ``rng`` are
    injectable for tests (a fake ``sleep`` should advance the fake ``clock``).
    """

    _MAX_TRACKED_PAGES = 256

    def __init__(
        self,
        settings: GovernorSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings if settings is not None else GovernorSettings.from_env()
        self.sleep = sleep
        self.clock = clock
        self.name = name
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._ledger = StatsLedger()
        self._usage_pct = 0.0
        self._blocked_until = float("-inf")
        self._pages: OrderedDict[int, _PageState] = OrderedDict()

    def __repr__(self) -> str:
        return f"RateLimitGovernor(name={self.name!r}, usage={self._usage_pct:g}%)"

    @property
    def stats(self) -> GovernorStats:
        """A snapshot of every call this governor has made, whoever asked for it."""
        return self._ledger.snapshot()

    @property
    def usage_pct(self) -> float:
        """The highest usage percentage in the latest response's headers."""
        with self._lock:
            return self._usage_pct

    # -- rules -----------------------------------------------------------------------------------

    def observe(self, headers: Any, ledger: StatsLedger | None = None) -> Usage:
        """Record a response's usage headers (success or error)."""
        usage = parse_usage(headers)
        if usage.by_header:
            with self._lock:
                self._usage_pct = usage.pct
            for target in self._ledgers(ledger):
                target.usage(usage.pct)
        return usage

    def slow_down_seconds(self, pct: float | None = None) -> float:
        """The pause before the next call at ``pct`` percent usage (default: the latest seen)."""
        if pct is None:
            pct = self.usage_pct
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
        retries = throttles = 0
        just_throttled = False
        while True:
            # Right after waiting out a throttle the usage we saw is stale: do not pace on it.
            self._pause_before_call(budget, ledger, slow_down=not just_throttled)
            just_throttled = False
            for target in self._ledgers(ledger):
                target.add(calls=1)
            try:
                response = send()
            except Exception as exc:
                failure = classify_error(exc)
                if failure is None:
                    raise
                usage = self.observe(failure.headers, ledger)
                if failure.kind in FATAL_KINDS:
                    raise
                if failure.kind == "throttle":
                    throttles += 1
                    if throttles > self.settings.max_throttle_waits:
                        _note_attempts(exc, retries + throttles - 1)
                        raise
                    wait = self.throttle_seconds(usage, throttles - 1)
                    self._wait(wait, budget, ledger, failure=failure, usage=usage, block=True)
                    for target in self._ledgers(ledger):
                        target.add(retries=1, throttle_waits=1)
                    just_throttled = True
                    continue
                retries += 1
                if retries > self.settings.max_retries:
                    _note_attempts(exc, retries - 1 + throttles)
                    raise
                if failure.kind == "reduce_data" and self._shrink(params, ledger):
                    wait = 0.0  # a smaller request is the fix, not waiting
                else:
                    wait = self.backoff_seconds(retries - 1)
                self._wait(wait, budget, ledger, failure=failure)
                for target in self._ledgers(ledger):
                    target.add(retries=1)
                continue
            self.observe(_response_headers(response), ledger)
            self._after_success(params, ledger)
            return response

    # -- internals -------------------------------------------------------------------------------

    def _ledgers(self, ledger: StatsLedger | None) -> tuple[StatsLedger, ...]:
        if ledger is None or ledger is self._ledger:
            return (self._ledger,)
        return (self._ledger, ledger)

    def _pause_before_call(
        self, budget: StatsLedger, ledger: StatsLedger | None, *, slow_down: bool = True
    ) -> None:
        with self._lock:
            blocked = self._blocked_until - self.clock()
            usage = self._usage_pct
        if blocked > 0:
            # Another caller of this scope was throttled: wait out what Meta told it.
            self._wait(blocked, budget, ledger, reason="throttled (shared)")
            for target in self._ledgers(ledger):
                target.add(throttle_waits=1)
            slow_down = False
        pause = self.slow_down_seconds(usage) if slow_down else 0.0
        if pause > 0:
            self._wait(pause, budget, ledger, reason=f"usage at {usage:g}%")
            for target in self._ledgers(ledger):
                target.add(slowdowns=1)

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
            raise self._budget_error(seconds, waited, limit, failure, usage, reason)
        if block:
            with self._lock:
                self._blocked_until = max(self._blocked_until, self.clock() + seconds)
        for target in self._ledgers(ledger):
            target.add(waited_seconds=seconds)
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

    def _budget_error(
        self,
        seconds: float,
        waited: float,
        limit: float,
        failure: Failure | None,
        usage: Usage | None,
        reason: str | None,
    ) -> RateLimitBudgetExceeded:
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
        scope = f" for {self.name}" if self.name else ""
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

    def _shrink(self, params: dict | None, ledger: StatsLedger | None) -> bool:
        if params is None:
            return False
        raw = params.get("limit", _DEFAULT_PAGE_SIZE)
        try:
            current = int(raw)
        except (TypeError, ValueError):
            return False
        floor = self.settings.min_page_size
        if current <= floor:
            return False
        new = max(floor, current // 2)
        with self._lock:
            state = self._pages.get(id(params))
            if state is None or state.params is not params:
                state = _PageState(params, original=current)
                self._pages[id(params)] = state
                while len(self._pages) > self._MAX_TRACKED_PAGES:
                    self._pages.popitem(last=False)
            state.successes = 0
            params["limit"] = new
        for target in self._ledgers(ledger):
            target.add(page_size_reductions=1)
        return True

    def _after_success(self, params: dict | None, ledger: StatsLedger | None) -> None:
        if params is None:
            return
        restored = False
        with self._lock:
            state = self._pages.get(id(params))
            if state is None or state.params is not params:
                return
            state.successes += 1
            if state.successes >= self.settings.restore_page_size_after:
                current = int(params.get("limit", state.original))
                params["limit"] = min(state.original, current * 2)
                state.successes = 0
                restored = True
                if params["limit"] >= state.original:
                    del self._pages[id(params)]
        if restored:
            for target in self._ledgers(ledger):
                target.add(page_size_restores=1)


def _note_attempts(exc: BaseException, retries: int) -> None:
    """Tell the client's error wrapper how many retries were spent before giving up."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.governor_retries = retries  # type: ignore[attr-defined]


# -- sharing: one governor per account -------------------------------------------------------------

_ACCOUNT_NODE = re.compile(r"^act_\d+$")
APP_SCOPE = "app"


def account_key(account_id: str | int | None) -> str:
    """The registry key of an account: ``act_<digits>`` (bare digits accepted); ``app`` for None."""
    if account_id is None:
        return APP_SCOPE
    text = str(account_id).strip()
    if text.isdigit():
        return f"act_{text}"
    return text


class GovernorRegistry:
    """One :class:`RateLimitGovernor` per key (ad account), created on first use.

    The latest settings passed to :meth:`get` win, so a process's governors follow its current
    environment. ``sleep``/``clock``/``rng_seed`` are for tests.
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

    def get(
        self, account_id: str | int | None, settings: GovernorSettings | None = None
    ) -> RateLimitGovernor:
        key = account_key(account_id)
        with self._lock:
            governor = self._governors.get(key)
            if governor is None:
                rng = random.Random(self._rng_seed) if self._rng_seed is not None else None
                governor = RateLimitGovernor(
                    settings, sleep=self.sleep, clock=self.clock, rng=rng, name=key
                )
                self._governors[key] = governor
            elif settings is not None and settings != governor.settings:
                governor.settings = settings
            return governor

    def reset(self) -> None:
        """Forget every governor (tests; a fresh process starts empty anyway)."""
        with self._lock:
            self._governors.clear()


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
        self.settings = settings if settings is not None else GovernorSettings.from_env()
        self.sleep = self.registry.sleep
        self.clock = self.registry.clock
        self._ledger = StatsLedger()
        self._lock = threading.Lock()
        self._bound: dict[str, str] = {}

    @property
    def stats(self) -> GovernorStats:
        return self._ledger.snapshot()

    def for_account(self, account_id: str | int | None) -> RateLimitGovernor:
        return self.registry.get(account_id, self.settings)

    def bind(self, node_id: str, account_id: str | int) -> None:
        """Bill later calls on ``node_id`` (e.g. a report run id) to ``account_id``."""
        with self._lock:
            self._bound[str(node_id)] = account_key(account_id)

    def route(self, path: Any) -> tuple[RateLimitGovernor, StatsLedger]:
        return self.for_account(self._scope(path)), self._ledger

    def _scope(self, path: Any) -> str | None:
        if isinstance(path, str):
            # A full URL (the SDK's paging links are followed as tuples, but be tolerant).
            segments = path.split("?", 1)[0].split("/")
        else:
            segments = [str(p).strip("/") for p in path or ()]
        for segment in segments:
            if _ACCOUNT_NODE.match(segment):
                return segment
        with self._lock:
            for segment in segments:
                if segment in self._bound:
                    return self._bound[segment]
        return None
