"""Insight numbers as whole units, so rows can be split (breakdowns) and summed (levels) exactly.

A :class:`Tally` holds one ad-day's numbers, or a sum of them: impressions, clicks, reach, spend
in cents, and the action lists (``actions``, ``action_values`` in cents, ``conversions``) keyed
by their action breakdown values (``action_type``, maybe ``action_device``). Each entry's
amounts are ``value`` and, once attributed (:mod:`graph_emulator.attribution`), one amount per
attribution window. :meth:`Tally.wire` renders Meta's strings again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from graph_emulator.apportion import apportion

__all__ = ["LIST_FIELDS", "WINDOWS", "EntryKey", "Tally", "frequency", "split", "split_amounts"]

LIST_FIELDS = ("actions", "action_values", "conversions")
_MONEY_LISTS = frozenset({"action_values"})  # amounts in cents, rendered "119.80"
# Every attribution window an entry can carry, in Meta's order.
WINDOWS = ("1d_click", "7d_click", "28d_click", "1d_view", "1d_ev")

# An entry's action breakdown values, e.g. (("action_type", "purchase"),).
EntryKey = tuple[tuple[str, str], ...]
Amounts = dict[str, int]


@dataclass
class Tally:
    """Whole-unit insight numbers of one ad-day or of a sum of ad-days."""

    impressions: int = 0
    clicks: int = 0
    reach: int = 0
    spend: int = 0  # cents
    lists: dict[str, dict[EntryKey, Amounts]] = field(default_factory=dict)

    @classmethod
    def of_row(cls, row: dict) -> Tally:
        """The numbers of one wire row (as :meth:`EmulatorData.insights` returns it)."""
        lists = {}
        for kind in LIST_FIELDS:
            entries = row.get(kind) or []
            if entries:
                parse = _cents if kind in _MONEY_LISTS else int
                lists[kind] = {
                    (("action_type", e["action_type"]),): {"value": parse(e["value"])}
                    for e in entries
                }
        return cls(
            impressions=int(row["impressions"]),
            clicks=int(row["clicks"]),
            reach=int(row["reach"]),
            spend=_cents(row["spend"]),
            lists=lists,
        )

    def add(self, other: Tally) -> None:
        """Add ``other`` into this tally (entries summed per key and per amount)."""
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.reach += other.reach
        self.spend += other.spend
        for kind, entries in other.lists.items():
            mine = self.lists.setdefault(kind, {})
            for key, amounts in entries.items():
                total = mine.setdefault(key, dict.fromkeys(amounts, 0))
                for name, amount in amounts.items():
                    total[name] = total.get(name, 0) + amount

    def wire(self, windows: Sequence[str] = ()) -> dict:
        """Meta's strings: counts, spend, a recomputed frequency, and the non-empty lists.

        Entries carry ``value`` and one key per asked attribution window; an entry whose
        amounts are all zero is left out, and so is a list left empty.
        """
        row = {
            "impressions": str(self.impressions),
            "clicks": str(self.clicks),
            "spend": _money(self.spend),
            "reach": str(self.reach),
            "frequency": frequency(self.impressions, self.reach),
        }
        for kind in LIST_FIELDS:
            render = _money if kind in _MONEY_LISTS else str
            entries = []
            for key, amounts in self.lists.get(kind, {}).items():
                shown = ["value", *windows]
                if not any(amounts.get(name, 0) for name in shown):
                    continue
                entries.append({**dict(key), **{n: render(amounts.get(n, 0)) for n in shown}})
            if entries:
                row[kind] = entries
        return row


def split(tally: Tally, weights: Sequence[int]) -> list[Tally]:
    """``tally`` split by integer ``weights``; the parts sum exactly to it, number by number.

    Reach is split first and impressions as reach plus a split surplus, so no part reaches
    more people than it had impressions. Attributed entries split their windows nested
    (1d <= 7d <= 28d click holds in every part) and rebuild ``value`` as 7d_click + 1d_view.
    """
    reach = apportion(tally.reach, weights)
    if tally.impressions >= tally.reach:
        surplus = apportion(tally.impressions - tally.reach, weights)
        impressions = [r + s for r, s in zip(reach, surplus, strict=True)]
    else:
        impressions = apportion(tally.impressions, weights)
    clicks = apportion(tally.clicks, weights)
    spend = apportion(tally.spend, weights)
    parts = [Tally(impressions[i], clicks[i], reach[i], spend[i], {}) for i in range(len(weights))]
    for kind, entries in tally.lists.items():
        for key, amounts in entries.items():
            for part, piece in zip(parts, split_amounts(amounts, weights), strict=True):
                part.lists.setdefault(kind, {})[key] = piece
    return parts


def split_amounts(amounts: Amounts, weights: Sequence[int]) -> list[Amounts]:
    """One entry's amounts split by ``weights``, each amount summing exactly."""
    if "7d_click" not in amounts:
        return [{"value": v} for v in apportion(amounts["value"], weights)]
    c1 = apportion(amounts["1d_click"], weights)
    c7 = _plus(c1, apportion(amounts["7d_click"] - amounts["1d_click"], weights))
    c28 = _plus(c7, apportion(amounts["28d_click"] - amounts["7d_click"], weights))
    view = apportion(amounts["1d_view"], weights)
    engaged = apportion(amounts["1d_ev"], weights)
    return [
        {
            "value": c7[i] + view[i],
            "1d_click": c1[i],
            "7d_click": c7[i],
            "28d_click": c28[i],
            "1d_view": view[i],
            "1d_ev": engaged[i],
        }
        for i in range(len(weights))
    ]


def frequency(impressions: int, reach: int) -> str:
    """Impressions per person reached as Meta's decimal string (up to 6 decimals; "0" if none)."""
    if reach <= 0:
        return "0"
    ratio = (Decimal(impressions) / Decimal(reach)).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    text = f"{ratio:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plus(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _cents(text: str) -> int:
    return int((Decimal(text) * 100).to_integral_value(ROUND_HALF_UP))


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"
