"""Meta's rate-limit usage headers, as the emulator reports them on every response.

Header shapes (values are percentages of the quota used, JSON-encoded in the header):

- ``X-App-Usage``: ``{"call_count": 2, "total_cputime": 1, "total_time": 2}``
- ``X-Ad-Account-Usage`` (ad-account calls):
  ``{"acc_id_util_pct": 2.5, "reset_time_duration": 0, "ads_api_access_tier": "standard_access"}``
- ``X-Business-Use-Case-Usage``: ``{"<business id>": [{"type": "ads_insights", "call_count": 2,
  "total_cputime": 1, "total_time": 2, "estimated_time_to_regain_access": 0,
  "ads_api_access_tier": "standard_access"}]}`` (the ETA is in minutes)
- ``x-fb-ads-insights-throttle`` (insights calls):
  ``{"app_id_util_pct": 2.5, "acc_id_util_pct": 2.5, "ads_api_access_tier": "standard_access"}``
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

__all__ = ["CallScope", "UsageMeter"]

ACCESS_TIER = "standard_access"
# Without set_usage() the load starts at 1% and creeps up to 5%: visible, never alarming.
_BASE_PCT = 1.0
_CEILING_PCT = 5.0
_PCT_PER_CALL = 0.02


@dataclass(frozen=True)
class CallScope:
    """What a call is billed against: its business object, use case, and ad account if any."""

    business_id: str | None = None
    use_case: str = "ads_management"
    account_id: str | None = None  # bare digits, set on ad-account calls
    insights: bool = False


class UsageMeter:
    """Counts calls and renders the usage headers; ``set_usage`` pins every percentage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._pinned: float | None = None

    def set_usage(self, pct: float | None) -> None:
        """Report ``pct`` percent everywhere from now on; None returns to the default creep."""
        if pct is not None and not 0 <= pct <= 1000:
            raise ValueError(f"usage percentage out of range: {pct}")
        with self._lock:
            self._pinned = None if pct is None else float(pct)

    def count_call(self) -> float:
        """Record one call; returns the usage percentage to report for it."""
        with self._lock:
            self._calls += 1
            if self._pinned is not None:
                return self._pinned
            return min(_CEILING_PCT, _BASE_PCT + self._calls * _PCT_PER_CALL)

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def headers(self, pct: float, scope: CallScope, eta_minutes: int = 0) -> dict[str, str]:
        """The usage headers of one response at ``pct`` percent for ``scope``."""
        whole = int(round(pct))
        headers = {
            "X-App-Usage": _dump({"call_count": whole, "total_cputime": whole, "total_time": whole})
        }
        if scope.business_id is not None:
            entry = {
                "type": scope.use_case,
                "call_count": whole,
                "total_cputime": whole,
                "total_time": whole,
                "estimated_time_to_regain_access": eta_minutes,
                "ads_api_access_tier": ACCESS_TIER,
            }
            headers["X-Business-Use-Case-Usage"] = _dump({scope.business_id: [entry]})
        if scope.account_id is not None:
            headers["X-Ad-Account-Usage"] = _dump(
                {
                    "acc_id_util_pct": round(pct, 2),
                    # Seconds until the ad-account window resets; only non-zero when throttled.
                    "reset_time_duration": eta_minutes * 60,
                    "ads_api_access_tier": ACCESS_TIER,
                }
            )
        if scope.insights:
            headers["x-fb-ads-insights-throttle"] = _dump(
                {
                    "app_id_util_pct": round(pct, 2),
                    "acc_id_util_pct": round(pct, 2),
                    "ads_api_access_tier": ACCESS_TIER,
                }
            )
        return headers


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
