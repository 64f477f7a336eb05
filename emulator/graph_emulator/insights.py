"""``act_<id>/insights``: one call's parameters checked like Meta's, and the rows it answers.

The rows start as the data's ad-level day rows. A plain call (level ad, no breakdowns, no
attribution windows) serves them as they are; any other call turns each into whole-unit
numbers (:class:`~graph_emulator.tally.Tally`), attributes and splits them per ad and day, and
sums them per level, so every derived row adds up exactly to the ad rows it came from.

Every page of a paged range asks for the whole range again, so a query's rows are computed once
and kept (:class:`RowCache`) until the data changes: a page then costs its own rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graph_emulator.action_breakdowns import parse_action_breakdowns, split_by_device
from graph_emulator.attribution import attribute, parse_windows
from graph_emulator.breakdowns import Breakdowns, parse_breakdowns
from graph_emulator.data import EmulatorData, normalize_account_id
from graph_emulator.derived import DERIVED, derived_metrics
from graph_emulator.insight_fields import check_insight_fields
from graph_emulator.labels import LABELS, labels
from graph_emulator.levels import LEVEL_IDS, check_level_fields, parse_level
from graph_emulator.statuses import HIDDEN_BY_DEFAULT, status_set
from graph_emulator.tally import Tally
from graph_emulator.wire import param_error, parse_fields, parse_filtering, parse_time_range

__all__ = ["InsightQuery", "InsightReader", "RowCache", "parse_query", "project"]

# Parameters that would change the shape of the result; silently ignoring them would return
# plausible but wrong data, so the emulator rejects them instead.
_UNSUPPORTED_PARAMS = ("time_ranges", "date_preset")
_DEFAULT_FIELDS = ("impressions", "spend")
_DATE_FIELDS = ("date_start", "date_stop")
_LEVELS = ("campaign", "adset", "ad")
_FILTERS = {
    **{f"{level}.id": {"IN", "EQUAL"} for level in _LEVELS},
    **{f"{level}.effective_status": {"IN"} for level in _LEVELS},
}
# Queries whose rows are kept: a client pages through a few ranges at a time (one per account
# and date window it syncs), so a small LRU covers them while bounding memory.
_CACHED_QUERIES = 64


@dataclass(frozen=True)
class InsightQuery:
    """What one insights call asks for, validated."""

    level: str
    fields: tuple[str, ...]
    breakdowns: tuple[str, ...]
    action_breakdowns: tuple[str, ...]
    windows: tuple[str, ...]
    filters: tuple[tuple[str, str, Any], ...]
    since: Any
    until: Any

    @property
    def plain(self) -> bool:
        """Whether the data's ad rows answer it as they are."""
        return (
            self.level == "ad"
            and not self.breakdowns
            and not self.windows
            and self.action_breakdowns == ("action_type",)
            and not self.derived
            and not self.labels
        )

    @property
    def labels(self) -> list[str]:
        """The name fields asked for (looked up by each row's ids)."""
        return [f for f in self.fields if f in LABELS]

    @property
    def derived(self) -> list[str]:
        """The ratio fields asked for (computed from the numbers of each row)."""
        return [f for f in self.fields if f in DERIVED]

    @property
    def columns(self) -> list[str]:
        """The row keys to return: the fields, the reporting window, the breakdown values."""
        dates = [f for f in _DATE_FIELDS if f not in self.fields]
        return [*self.fields, *dates, *self.breakdowns]


def parse_query(params: dict[str, str]) -> InsightQuery:
    """The call's parameters checked as Meta checks them; any problem is code 100."""
    level = parse_level(params.get("level"))
    increment = params.get("time_increment", "all_days")
    if increment != "1":
        raise param_error(f"time_increment={increment} is not supported by the emulator; use 1")
    for name in _UNSUPPORTED_PARAMS:
        if params.get(name, "") not in ("", "[]"):
            raise param_error(f"{name} is not supported by the emulator")
    action_breakdowns = parse_action_breakdowns(params.get("action_breakdowns"))
    breakdowns = parse_breakdowns(params.get("breakdowns"), action_breakdowns)
    windows = parse_windows(params.get("action_attribution_windows"))
    fields = parse_fields(params.get("fields")) or list(_DEFAULT_FIELDS)
    check_insight_fields(fields, with_breakdowns=bool(breakdowns))
    check_level_fields(fields, level)
    filters = parse_filtering(params.get("filtering"), _FILTERS)
    since, until = parse_time_range(params.get("time_range"))
    return InsightQuery(
        level=level,
        fields=tuple(fields),
        breakdowns=tuple(breakdowns),
        action_breakdowns=tuple(action_breakdowns),
        windows=tuple(windows),
        filters=tuple(filters),
        since=since,
        until=until,
    )


def project(rows: list[dict], columns: list[str]) -> list[dict]:
    """Each row with only ``columns``; a column the row lacks (an empty list) stays out."""
    return [{name: row[name] for name in columns if name in row} for row in rows]


class RowCache:
    """A thread-safe LRU of row lists by key; the lists and their rows are shared, read-only."""

    def __init__(self, size: int = _CACHED_QUERIES) -> None:
        if size < 1:
            raise ValueError("a row cache holds at least one entry")
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, list[dict]] = OrderedDict()

    def get(self, key: tuple) -> list[dict] | None:
        """The rows stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            rows = self._entries.get(key)
            if rows is not None:
                self._entries.move_to_end(key)
            return rows

    def put(self, key: tuple, rows: list[dict]) -> None:
        """Store ``rows`` under ``key``, dropping the least recently used entry when full."""
        with self._lock:
            self._entries[key] = rows
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class InsightReader:
    """Answers insights queries from :class:`EmulatorData`, keeping recent queries' rows."""

    def __init__(self, data: EmulatorData, cache: RowCache | None = None) -> None:
        self.data = data
        self.cache = cache if cache is not None else RowCache()

    def rows(self, account_id: str, query: InsightQuery) -> list[dict]:
        """The query's rows in order (date, ids, breakdown values), not yet projected.

        The list and its rows may be shared with other calls: callers must not mutate them
        (:func:`project` builds new dicts).
        """
        generation = self.data.generation
        # repr is a stable key: the query is a frozen dataclass, but a filter value may be a list.
        key = (normalize_account_id(account_id), repr(query), generation)
        rows = self.cache.get(key)
        if rows is None:
            rows = self._compute(account_id, query)
            # Kept only if the data did not change meanwhile: the rows may mix both states.
            if self.data.generation == generation:
                self.cache.put(key, rows)
        return rows

    def _compute(self, account_id: str, query: InsightQuery) -> list[dict]:
        # Read-only rows (test doubles serve odd ones through this hook); never mutated here.
        rows = self.data.served_insights(account_id, query.since, query.until)
        rows = self._filter(account_id, rows, query.filters)
        return rows if query.plain else self._derive(account_id, rows, query)

    def _filter(self, account_id: str, rows: list[dict], filters) -> list[dict]:
        status_filters = []
        for name, operator, value in filters:
            level, _, attribute_name = name.partition(".")
            if attribute_name == "id":
                wanted = _id_set(value, operator, name)
                rows = [row for row in rows if row[f"{level}_id"] in wanted]
            else:
                status_filters.append((f"{level}_id", status_set(value, name)))
        statuses = self.data.effective_statuses(account_id)
        if not status_filters:
            # Meta's default: deleted and archived ads report nothing unless asked for.
            hidden = {i for i, status in statuses.items() if status in HIDDEN_BY_DEFAULT}
            # Every page of a range filters the whole range: skip the pass when nothing hides.
            return [row for row in rows if row["ad_id"] not in hidden] if hidden else rows
        for key, wanted in status_filters:
            rows = [row for row in rows if statuses.get(row[key]) in wanted]
        return rows

    def _derive(self, account_id: str, rows: list[dict], query: InsightQuery) -> list[dict]:
        breakdowns = Breakdowns(query.breakdowns) if query.breakdowns else None
        id_fields = LEVEL_IDS[query.level]
        groups: dict[tuple, Tally] = {}
        for row in rows:
            day = row["date_start"]
            ids = tuple(row[f] for f in id_fields)
            for combo, part in self._parts(row, query, breakdowns):
                key = (day, row["date_stop"], ids, combo)
                if key in groups:
                    groups[key].add(part)
                else:
                    groups[key] = part
        names = labels(self.data, account_id) if query.labels else None
        order = sorted(
            groups, key=lambda k: (k[0], k[2], breakdowns.order(k[3]) if breakdowns else ())
        )
        return [
            {
                **dict(zip(id_fields, ids, strict=True)),
                **(names.of(dict(zip(id_fields, ids, strict=True)), query.labels) if names else {}),
                "date_start": start,
                "date_stop": stop,
                **groups[(start, stop, ids, combo)].wire(query.windows),
                **derived_metrics(groups[(start, stop, ids, combo)], query.derived),
                **dict(zip(query.breakdowns, combo, strict=True)),
            }
            for start, stop, ids, combo in order
        ]

    def _parts(
        self, row: dict, query: InsightQuery, breakdowns: Breakdowns | None
    ) -> list[tuple[tuple[str, ...], Tally]]:
        """One ad-day as whole-unit numbers: attributed, split by device and by breakdowns."""
        day, ad_id = row["date_start"], row["ad_id"]
        tally = Tally.of_row(row)
        device = "action_device" in query.action_breakdowns
        if query.windows or device or breakdowns is not None:
            # Attributed whenever rows are split, so a part's `value` is the same whether or
            # not windows are asked for.
            attribute(
                tally,
                lambda kind, kind_type: self.data.stream("window", ad_id, day, kind, kind_type),
            )
        if device:
            split_by_device(
                tally, lambda name, value: self.data.stream("split", ad_id, day, name, value)
            )
        if breakdowns is None:
            return [((), tally)]
        return breakdowns.split(
            tally, lambda name, value: self.data.stream("split", ad_id, day, name, value)
        )


def _id_set(value: Any, operator: str, name: str) -> set[str]:
    values = value if isinstance(value, list) else [value]
    if operator == "EQUAL" and isinstance(value, list):
        raise param_error(f"Filter {name} EQUAL takes a single id")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise param_error(f"Filter {name} values must be ids")
    return {str(v) for v in values}
