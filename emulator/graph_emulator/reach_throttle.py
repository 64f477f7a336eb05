"""Meta's reach throttle: ``x-fb-ads-insights-reach-throttle`` on broken-down reach queries.

Since 2025 Meta limits insights queries that ask for ``reach`` (or ``frequency``, derived from
it) together with ``breakdowns``: about 10 such requests per ad account per day. Responses to
them carry ``{"acc_id_util_pct": <n>, "reset_time_duration": <seconds>}``; the emulator adds 10
points per new query (a cursor page of the same query is not a new one), per account and UTC day.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from graph_emulator.wire import parse_fields, parse_name_list

__all__ = ["REACH_THROTTLE_HEADER", "ReachThrottle"]

REACH_THROTTLE_HEADER = "x-fb-ads-insights-reach-throttle"
_PCT_PER_QUERY = 10
_REACH_FIELDS = frozenset({"reach", "frequency"})


class ReachThrottle:
    """Counts broken-down reach queries per account and UTC day; renders the header."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._day = datetime.now(UTC).date()
        self._queries: dict[str, int] = {}

    def headers(self, account_id: str, params: dict[str, str]) -> dict[str, str]:
        """The header for one (already validated) insights call, or none when it does not apply."""
        fields = set(parse_fields(params.get("fields")) or ())
        if not fields & _REACH_FIELDS or not parse_name_list(
            params.get("breakdowns"), "breakdowns"
        ):
            return {}
        now = datetime.now(UTC)
        with self._lock:
            if now.date() != self._day:
                self._day, self._queries = now.date(), {}
            if not (params.get("after") or params.get("before")):
                self._queries[account_id] = self._queries.get(account_id, 0) + 1
            used = min(100, _PCT_PER_QUERY * self._queries.get(account_id, 0))
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        value = {
            "acc_id_util_pct": used,
            "reset_time_duration": int((midnight - now).total_seconds()),
        }
        return {REACH_THROTTLE_HEADER: json.dumps(value, separators=(",", ":"))}
