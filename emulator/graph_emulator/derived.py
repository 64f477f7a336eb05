"""Insight ratios Meta derives from the counts: ``ctr``, ``cpc``, ``cpm``, ``cpp`` and
``inline_link_clicks``, computed from a row's (or a sum's) whole-unit numbers.

Meta leaves a ratio out of the row when its denominator is zero (no ``cpc`` without clicks).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from graph_emulator.tally import Tally

__all__ = ["DERIVED", "derived_metrics"]

DERIVED = ("ctr", "cpc", "cpm", "cpp", "inline_link_clicks")


def derived_metrics(tally: Tally, names: Sequence[str]) -> dict[str, str]:
    """The asked-for derived fields of ``tally`` as Meta's decimal strings."""
    spend = Decimal(tally.spend) / 100
    ratios = {
        "ctr": (Decimal(tally.clicks) * 100, tally.impressions),
        "cpc": (spend, tally.clicks),
        "cpm": (spend * 1000, tally.impressions),
        "cpp": (spend * 1000, tally.reach),
    }
    out = {}
    for name in names:
        if name == "inline_link_clicks":
            link = tally.lists.get("actions", {})
            out[name] = str(
                sum(
                    a["value"]
                    for key, a in link.items()
                    if dict(key)["action_type"] == "link_click"
                )
            )
        elif name in ratios and ratios[name][1]:
            numerator, denominator = ratios[name]
            out[name] = _decimal(numerator / denominator)
    return out


def _decimal(value: Decimal) -> str:
    text = f"{value.quantize(Decimal('0.000001'), ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
