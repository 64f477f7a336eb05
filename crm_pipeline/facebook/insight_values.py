"""Meta's value fields of an insights row: frequency, action_values and conversions.

Checked before landing (a row whose values cannot be read is quarantined, like a spend that is
not a number) and read by `transforms.insight_rows`, which lifts purchases out of them. Pure
functions, no I/O.

Purchases are counted like leads: from one action type, never summed across types, because Meta
reports the same purchase under several. `purchase` is Meta's total over the purchase types
(pixel, app, offline) when present; a pixel-only setup may send only
`offsite_conversion.fb_pixel_purchase`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

__all__ = [
    "PURCHASE_ACTION_TYPES",
    "purchase_count",
    "purchase_value",
    "value_problem",
]

# In order of preference: the first type present is the purchase count (or value).
PURCHASE_ACTION_TYPES = ("purchase", "offsite_conversion.fb_pixel_purchase")
# Lists of {"action_type", "value"} objects, kept whole in the raw landing and the table.
_ACTION_LISTS = ("actions", "action_values", "conversions")


def _decimal(value: Any) -> Decimal | None:
    """`value` as a finite, non-negative decimal; None when it is not one."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


def _list_problem(name: str, items: Any) -> str | None:
    if not isinstance(items, list) or not all(isinstance(a, dict) for a in items):
        return f"{name} is not a list of objects"
    for item in items:
        if "value" in item and _decimal(item["value"]) is None:
            return f"{name} has a value that is not a non-negative number: {item['value']!r}"
    return None


def value_problem(row: dict) -> str | None:
    """Why the row's frequency or action lists cannot be loaded; None when they can (or are
    absent: Meta omits an empty list)."""
    frequency = row.get("frequency")
    if frequency is not None and _decimal(frequency) is None:
        return f"frequency is not a non-negative number: {frequency!r}"
    for name in _ACTION_LISTS:
        if row.get(name) is not None:
            problem = _list_problem(name, row[name])
            if problem:
                return problem
    return None


def _purchase(items_json: str | None) -> Decimal:
    """The purchase entry of a landed action list (JSON text), by `PURCHASE_ACTION_TYPES`."""
    if not items_json:
        return Decimal(0)
    by_type = {a.get("action_type"): a.get("value") for a in orjson.loads(items_json)}
    for action_type in PURCHASE_ACTION_TYPES:
        if by_type.get(action_type) is not None:
            return Decimal(str(by_type[action_type]))
    return Decimal(0)


def purchase_count(actions_json: str | None) -> int:
    """Purchases in one insights row's `actions` (0 when none)."""
    return int(_purchase(actions_json))


def purchase_value(action_values_json: str | None) -> Decimal:
    """Meta-reported purchase value in one insights row's `action_values` (0 when none), in the
    ad account's currency."""
    return _purchase(action_values_json)
