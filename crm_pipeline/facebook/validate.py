"""Checking Graph API rows before they land: good rows go on, malformed ones are quarantined.

Unknown fields are tolerated (Meta adds fields over time); a row is malformed only when a field
we rely on is missing or cannot be what it claims (a spend that is not a number, a date that is
not a date). Validation never fixes values: the raw landing keeps what Meta sent.
"""

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_pipeline.facebook.ids import AD_ACCOUNT_NODE

# ASCII digits only, the whole value: `\d` would pass other scripts' digits and `$` a trailing
# newline, which PostgreSQL then refuses, failing the load instead of quarantining the row.
_INTEGER = re.compile(r"[0-9]+\Z")
# The plain form Meta sends a spend in, within ad_insights_daily.spend's numeric(18, 4).
_AMOUNT = re.compile(r"[0-9]{1,14}(?:\.[0-9]+)?\Z")
_MAX_AMOUNT = Decimal(10) ** 14
_META_TIME = "%Y-%m-%dT%H:%M:%S%z"


@dataclass
class Checked:
    """Rows split into those that pass and those quarantined with a reason."""

    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)  # {"reason": str, "record": dict}


def metric_problem(row: dict, counts: tuple[str, ...]) -> str | None:
    """What is wrong with an insights row's `counts` (non-negative integer strings, or absent)
    and its `spend` (a non-negative amount), or None."""
    for key in counts:
        value = row.get(key)
        if value is not None and not _INTEGER.match(str(value)):
            return f"{key} is not a non-negative integer: {value!r}"
    value = row.get("spend", "0")
    if type(value) is str and _AMOUNT.match(value):
        return None  # the common case, without building a Decimal (300k rows per month)
    try:
        spend = Decimal(str(value))
    except InvalidOperation:
        return f"spend is not a number: {row.get('spend')!r}"
    if not spend.is_finite() or spend < 0:
        return f"spend is not a non-negative amount: {row.get('spend')!r}"
    if spend >= _MAX_AMOUNT:
        return f"spend is too large to store: {row.get('spend')!r}"
    return None


def _problems_insight(row: dict, day: str) -> str | None:
    for key in ("ad_id", "adset_id", "campaign_id", "account_id"):
        if not str(row.get(key) or "").strip():
            return f"missing {key}"
    if row.get("date_start") != day:
        return f"date_start {row.get('date_start')!r} is not the partition day {day}"
    problem = metric_problem(row, ("impressions", "clicks", "reach"))
    if problem:
        return problem
    actions = row.get("actions")
    if actions is not None and not (
        isinstance(actions, list) and all(isinstance(a, dict) for a in actions)
    ):
        return "actions is not a list of objects"
    return None


def parse_meta_time(value: Any) -> dt.datetime | None:
    """Meta's timestamps ("2026-11-20T10:00:00+0000") as aware datetimes; None if unparsable."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value, _META_TIME)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else None


def _require(row: dict, keys: Iterable[str], times: Iterable[str]) -> str | None:
    for key in keys:
        if not str(row.get(key) or "").strip():
            return f"missing {key}"
    for key in times:
        if row.get(key) is not None and parse_meta_time(row.get(key)) is None:
            return f"{key} is not a timestamp: {row.get(key)!r}"
    return None


def _split(rows: Iterable[dict], problem: Callable[[dict], str | None]) -> Checked:
    checked = Checked()
    for row in rows:
        reason = problem(row) if isinstance(row, dict) else "not a JSON object"
        if reason:
            checked.bad.append({"reason": reason, "record": row})
        else:
            checked.good.append(row)
    return checked


def check_insights(rows: Iterable[dict], day: str) -> Checked:
    """Ad-level daily insights for `day`."""
    return _split(rows, lambda r: _problems_insight(r, day))


def check_custom_insights(
    rows: Iterable[dict], day: str, ids: Iterable[str], kinds: Mapping[str, str]
) -> Checked:
    """Rows of a custom insights entry for `day`: the level's `ids` present, `date_start` the
    day, and each field of `kinds` storable as its kind (`integer`, `decimal`, `json`), so one
    odd value is quarantined instead of failing the load of its whole account-day."""
    ids = tuple(ids)
    return _split(rows, lambda r: _problems_custom(r, day, ids, kinds))


def _problems_custom(
    row: dict, day: str, ids: tuple[str, ...], kinds: Mapping[str, str]
) -> str | None:
    for key in ids:
        if not str(row.get(key) or "").strip():
            return f"missing {key}"
    if row.get("date_start") != day:
        return f"date_start {row.get('date_start')!r} is not the partition day {day}"
    for key, kind in kinds.items():
        value = row.get(key)
        if value is None:
            continue
        if kind == "integer" and not _INTEGER.match(str(value)):
            return f"{key} is not a non-negative integer: {value!r}"
        if kind == "decimal" and not _is_number(value):
            return f"{key} is not a number: {value!r}"
        if kind == "json" and not isinstance(value, (list, dict)):
            return f"{key} is not a list or an object"
    return None


def _is_number(value: Any) -> bool:
    try:
        return Decimal(str(value)).is_finite()
    except InvalidOperation:
        return False


def check_ad_accounts(rows: Iterable[dict]) -> Checked:
    """Ad account nodes: an ``act_<digits>`` id."""
    return _split(
        rows,
        lambda r: (
            None if AD_ACCOUNT_NODE.match(str(r.get("id") or "")) else "id is not act_<digits>"
        ),
    )


def check_objects(rows: Iterable[dict]) -> Checked:
    """Campaigns, ad sets or ads: an id and parseable times."""
    return _split(rows, lambda r: _require(r, ("id",), ("created_time", "updated_time")))


def check_leads(rows: Iterable[dict]) -> Checked:
    """Lead Ads leads: an id, a creation time and field_data as a list."""

    def problem(row: dict) -> str | None:
        missing = _require(row, ("id", "created_time"), ("created_time",))
        if missing:
            return missing
        data = row.get("field_data")
        if data is not None and not (
            isinstance(data, list) and all(isinstance(f, dict) and "name" in f for f in data)
        ):
            return "field_data is not a list of {name, values}"
        return None

    return _split(rows, problem)


def check_conversations(rows: Iterable[dict]) -> Checked:
    """Page conversations: an id and an updated_time."""
    return _split(rows, lambda r: _require(r, ("id", "updated_time"), ("updated_time",)))


def check_messages(rows: Iterable[dict]) -> Checked:
    """Messages: an id, a conversation and a creation time."""
    return _split(
        rows,
        lambda r: _require(r, ("id", "conversation_id", "created_time"), ("created_time",)),
    )
