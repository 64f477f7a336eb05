"""Sorting a million `(value, id)` pairs at once, as the in-memory customer index loads.

Python's own sort of a million tuples takes seconds (every comparison follows pointers to
objects scattered over the heap); Arrow's sort of the same values held in two columns takes a
fraction of that. The order is the same: UTF-8 bytes sort as the characters' code points do,
which is how Python compares strings, and floats and ints compare as numbers. Pairs Arrow cannot
hold (mixed value types, a string that is not valid Unicode) are sorted by Python instead.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Below this many pairs Python's sort is as quick, and nothing is converted.
ARROW_FROM = 4096
_KEYS = [("value", "ascending"), ("id", "ascending")]


def sort_pairs(pairs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """`pairs` (each a value and an int, values all str or all numbers) in ascending order,
    exactly as `sorted(pairs)` would give them; the very tuples passed, not copies."""
    return [pairs[i] for i in sort_order(pairs)]


def sort_order(pairs: list[tuple[Any, int]]) -> list[int]:
    """The indexes of `pairs` in the order `sorted(pairs)` would put them (ties: either)."""
    if len(pairs) >= ARROW_FROM:
        try:
            table = pa.table(
                {"value": pa.array([p[0] for p in pairs]), "id": pa.array([p[1] for p in pairs])}
            )
        except (pa.ArrowException, UnicodeError, TypeError, OverflowError):
            table = None  # not one Arrow type, or not valid Unicode: Python can still sort
        if table is not None and _comparable(table):
            return pc.sort_indices(table, sort_keys=_KEYS).to_pylist()
    return sorted(range(len(pairs)), key=pairs.__getitem__)


def _comparable(table: pa.Table) -> bool:
    """Does Arrow compare these columns as Python compares the pairs (no nulls, and strings or
    numbers, not e.g. lists)?"""
    kind = table.schema.field("value").type
    return table.column("value").null_count == 0 and (
        pa.types.is_string(kind) or pa.types.is_floating(kind) or pa.types.is_integer(kind)
    )


def group_places(keys: list[str | None]) -> dict[str | None, list[int]]:
    """For each distinct key of `keys` (strings or None): the places it holds, ascending. What
    a loop appending each place to its key's list gives, without a Python step per item."""
    if len(keys) < ARROW_FROM:
        groups: dict[str | None, list[int]] = {}
        for place, key in enumerate(keys):
            groups.setdefault(key, []).append(place)
        return groups
    column = pa.array(keys, type=pa.string())
    # A stable sort by key: each key's places stay ascending, and its places are one run.
    places = pc.sort_indices(column).to_pylist()  # nulls last
    counts = {c["values"]: c["counts"] for c in pc.value_counts(column).to_pylist()}
    ordered = sorted(k for k in counts if k is not None) + ([None] if None in counts else [])
    groups, start = {}, 0
    for key in ordered:
        groups[key] = places[start : start + counts[key]]
        start += counts[key]
    return groups
