"""Meta's rate-limit usage headers, read into one :class:`Usage`.

``X-App-Usage``, ``X-Ad-Account-Usage``, ``X-Business-Use-Case-Usage``,
``x-fb-ads-insights-throttle`` and ``x-Fb-Ads-Insights-Reach-Throttle`` come on successes and
errors alike; values are JSON whose shape Meta varies, so anything malformed or missing is
ignored rather than trusted.

The reach throttle is Meta's separate quota for insights with ``reach`` (and ``frequency``)
and breakdowns: about 10 such queries per ad account per day for start dates over 13 months
old. Past it Meta does not fail the request but silently drops ``reach`` from the rows, so it
counts toward the usage the governor paces on like any other quota.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REACH_THROTTLE", "Usage", "parse_usage"]

# Meta's docs spell it `x-Fb-Ads-Insights-Reach-Throttle`; headers are read in lower case.
REACH_THROTTLE = "x-fb-ads-insights-reach-throttle"

# Percent-of-quota keys of the app and Business Use Case headers.
_PCT_KEYS = ("call_count", "total_cputime", "total_time")


@dataclass(frozen=True)
class Usage:
    """What one response's usage headers say.

    ``pct`` is the highest percentage of any quota in any header (0 when there are none),
    ``eta_seconds`` the longest ``estimated_time_to_regain_access`` (Meta reports minutes),
    ``reset_seconds`` the longest ``reset_time_duration`` (seconds) of the ad account and reach
    throttle headers and ``by_header`` the highest percentage per header (lower-case names).
    """

    pct: float = 0.0
    eta_seconds: float = 0.0
    reset_seconds: float = 0.0
    by_header: Mapping[str, float] | None = None


def parse_usage(headers: Any) -> Usage:
    """Read Meta's usage headers (any case; malformed or missing values are ignored)."""
    lowered = _lower_headers(headers)
    by_header: dict[str, float] = {}

    app = _max_of(_json(lowered.get("x-app-usage")), _PCT_KEYS)
    if app is not None:
        by_header["x-app-usage"] = app

    account = _json(lowered.get("x-ad-account-usage"))
    pct = _max_of(account, ("acc_id_util_pct",))
    if pct is not None:
        by_header["x-ad-account-usage"] = pct
    reset = (_number(account.get("reset_time_duration")) or 0.0) if _is_map(account) else 0.0

    buc_pct, eta_minutes = _business_use_case(_json(lowered.get("x-business-use-case-usage")))
    if buc_pct is not None:
        by_header["x-business-use-case-usage"] = buc_pct

    insights = _max_of(
        _json(lowered.get("x-fb-ads-insights-throttle")), ("app_id_util_pct", "acc_id_util_pct")
    )
    if insights is not None:
        by_header["x-fb-ads-insights-throttle"] = insights

    reach = _json(lowered.get(REACH_THROTTLE))
    reach_pct = _max_of(reach, ("acc_id_util_pct", "app_id_util_pct"))
    if reach_pct is not None:
        by_header[REACH_THROTTLE] = reach_pct
    if _is_map(reach):
        reset = max(reset, _number(reach.get("reset_time_duration")) or 0.0)

    return Usage(
        pct=max(by_header.values(), default=0.0),
        eta_seconds=eta_minutes * 60.0,
        reset_seconds=reset,
        by_header=by_header,
    )


def _business_use_case(buc: Any) -> tuple[float | None, float]:
    """The highest percentage and the longest wait (minutes) of every use-case entry."""
    highest: float | None = None
    eta_minutes = 0.0
    if not _is_map(buc):
        return highest, eta_minutes
    for entries in buc.values():
        for entry in entries if isinstance(entries, list) else [entries]:
            pct = _max_of(entry, _PCT_KEYS)
            if pct is not None:
                highest = pct if highest is None else max(highest, pct)
            if _is_map(entry):
                eta = _number(entry.get("estimated_time_to_regain_access"))
                eta_minutes = max(eta_minutes, eta or 0.0)
    return highest, eta_minutes


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


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
    if not _is_map(entry):
        return None
    numbers = [n for n in (_number(entry.get(k)) for k in keys) if n is not None]
    return max(numbers) if numbers else None
