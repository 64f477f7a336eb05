"""The API's in-memory customer index: every customer of the index segments, kept sorted by
name, revenue and last update (all customers, and each tier's apart: a tier filter then walks
only its own customers), with a prefix index of search tokens.

A segment is applied by difference (`replace_segment`): only customers whose line changed move
in the sorted structures, so applying the one rewritten segment of a single-customer change
costs a few O(log n + chunk) operations, whatever the number of customers. `load` builds
everything at once (a process start, a full rebuild).

Sort keys, chosen so every order is a plain ascending walk of one `SortedChunks`:
- name: `(name_key, id)`, walked forward (A to Z, then by id);
- revenue and updated: `(value, -id)`, walked backward (highest first, ties by id ascending).

Queries (`crm_pipeline.api.customer_query`) read under the same lock the updates take.
"""

from __future__ import annotations

import contextlib
import gc
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from crm_pipeline.api.pair_sort import group_places, sort_order
from crm_pipeline.api.sorted_chunks import SortedChunks

_WORD = re.compile(r"\w+")
_NOT_DIGIT = re.compile(r"\D")
SORTS = ("name", "revenue", "updated")
_SORT_INDEX = {sort: i for i, sort in enumerate(SORTS)}
_LAST_CHAR = chr(0x10FFFF)  # after every character: `p + _LAST_CHAR` bounds what starts with p
# A line of the index, as the segments hold it and the API lists it.
FIELDS = ("id", "name", "email", "phone", "tier", "orders", "revenue", "leads", "updated_at")


def words(text: str) -> list[str]:
    """The search words of a name or query: runs of letters and digits, case-folded."""
    return _WORD.findall(text.casefold())


def _folded(text: str) -> str:
    """`text` case-folded: the very same string when folding changes nothing (most emails)."""
    folded = text.casefold()
    return text if folded == text else folded


def digits(text: str) -> str:
    """The digits of a phone number (or of a query), in order."""
    return _NOT_DIGIT.sub("", text)


class Customer:
    """One line of the customer index, as a segment holds it, with its place in each sort order
    (the very tuples the orders hold: made once, shared, never rebuilt per query)."""

    # name_key and email_key: what a search compares, kept so a walk past a million customers
    # does not fold each name and email again (the same string when already folded).
    __slots__ = (*FIELDS, "_positions", "name_key", "email_key")

    def __init__(
        self,
        id: int,  # noqa: A002  (the field's name)
        name: str | None,
        email: str | None,
        phone: str | None,
        tier: str | None,
        orders: int,
        revenue: float,
        leads: int,
        updated_at: str,  # UTC ISO 8601 with microseconds: sorts as the time does
    ) -> None:
        self.id, self.name, self.email, self.phone, self.tier = id, name, email, phone, tier
        self.orders, self.revenue, self.leads, self.updated_at = orders, revenue, leads, updated_at
        self.name_key = _folded(name or "")  # the name as it sorts and is searched ("": first)
        self.email_key = _folded(email) if email else ""
        backward = -id  # one int object for both backward orders
        self._positions = ((self.name_key, id), (revenue, backward), (updated_at, backward))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Customer:
        """The customer of a segment's row (tiers are interned: a handful of values)."""
        tier = row.get("tier")
        return cls(
            int(row["id"]),
            row.get("name"),
            row.get("email"),
            row.get("phone"),
            sys.intern(tier) if isinstance(tier, str) else tier,
            int(row.get("orders") or 0),
            # Always a float: a sort compares keys of one type much faster (and 0 is a float).
            float(row.get("revenue") or 0),
            int(row.get("leads") or 0),
            str(row.get("updated_at") or ""),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Customer):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in FIELDS)

    __hash__ = None  # type: ignore[assignment]  (compared by value, never a set member)

    def __repr__(self) -> str:
        return f"Customer(id={self.id})"  # never personal data in a repr

    def as_json(self) -> dict[str, Any]:
        """The customer as the API lists it (the fields of the index segment)."""
        return {f: getattr(self, f) for f in FIELDS}

    def sort_value(self, sort: str) -> Any:
        """The value this customer sorts by under `sort`."""
        return self._positions[_SORT_INDEX[sort]][0]

    def position(self, sort: str) -> tuple[Any, int]:
        """Where this customer sits in the `sort` order (see the module docstring)."""
        return self._positions[_SORT_INDEX[sort]]

    def tokens(self) -> set[str]:
        """What a search prefix is matched against: each word of the name (interned: names
        share words), the whole email, the digits of the phone."""
        found = {sys.intern(w) for w in words(self.name)} if self.name else set()
        if self.email_key:
            found.add(self.email_key)
        phone = digits(self.phone) if self.phone else ""
        if phone:
            found.add(phone)
        return found


@contextlib.contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """No cyclic garbage collection while millions of objects are made that all live on: each
    collection would walk them all again (a load takes several times longer).

    With `freeze`, what exists at the end is moved out of the collector's sight before it runs
    again (`gc.freeze`): else its next collection, of the youngest generation, walks every
    object made meanwhile (1.5 s at 1M customers), and each later full one walks them all
    again (pauses of 100s of ms: the list's p99). Frozen objects are still freed by reference
    counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


class CustomerSearch:
    """Customers by id, in three sort orders, by search token and by tier; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._empty()

    def _empty(self) -> None:
        self.customers: dict[int, Customer] = {}
        self.orders: dict[str, SortedChunks] = {sort: SortedChunks() for sort in SORTS}
        # The same positions (the same tuples: a pointer each) per tier.
        self.tier_orders: dict[str | None, dict[str, SortedChunks]] = {}
        self.tokens = SortedChunks()  # (token, id)
        self._segment_ids: dict[int, list[int]] = {}

    def order(self, sort: str, tier: str | None = None) -> SortedChunks:
        """The `sort` order of every customer, or of the customers of `tier` (call under
        `lock`)."""
        if tier is None:
            return self.orders[sort]
        return self.tier_orders.get(tier, {}).get(sort) or SortedChunks()

    def __len__(self) -> int:
        return len(self.customers)

    def segments(self) -> list[int]:
        """The segments held."""
        with self.lock:
            return sorted(self._segment_ids)

    def load(self, segments: dict[int, list[Customer]]) -> None:
        """Hold exactly `segments` (segment -> its customers), built at once: sorting every
        order once is much cheaper than inserting a million customers one by one."""
        with collector_paused():
            self._load(segments)

    def _load(self, segments: dict[int, list[Customer]]) -> None:
        customers = {}
        segment_ids = {}
        for segment, loaded in segments.items():
            customers.update((c.id, c) for c in loaded)
            segment_ids[segment] = [c.id for c in loaded]
        everyone = list(customers.values())
        tier_of = [c.tier for c in everyone]
        orders: dict[str, SortedChunks] = {}
        tier_orders: dict[str | None, dict[str, SortedChunks]] = {}
        for sort in SORTS:
            positions = [c.position(sort) for c in everyone]
            order = sort_order(positions)
            placed = [positions[i] for i in order]
            orders[sort] = SortedChunks(placed, presorted=True)
            # Each tier's share of the sorted list, in the same order.
            for tier, places in group_places([tier_of[i] for i in order]).items():
                tier_orders.setdefault(tier, {})[sort] = SortedChunks(
                    [placed[j] for j in places], presorted=True
                )
        pairs = [(t, c.id) for c in everyone for t in c.tokens()]
        tokens = SortedChunks([pairs[i] for i in sort_order(pairs)], presorted=True)
        with self.lock:
            self.customers, self.orders, self.tokens = customers, orders, tokens
            self.tier_orders, self._segment_ids = tier_orders, segment_ids

    def replace_segment(self, segment: int, customers: Iterable[Customer]) -> int:
        """Hold `customers` as segment `segment` (replacing what it held); how many customers
        were added, changed or removed."""
        fresh = {c.id: c for c in customers}
        changed = 0
        with self.lock:
            for customer_id in self._segment_ids.get(segment, []):
                if customer_id not in fresh:
                    self._remove(self.customers[customer_id])
                    changed += 1
            for customer_id, customer in fresh.items():
                held = self.customers.get(customer_id)
                if held != customer:
                    if held is not None:
                        self._remove(held)
                    self._add(customer)
                    changed += 1
            if fresh:
                self._segment_ids[segment] = list(fresh)
            else:
                self._segment_ids.pop(segment, None)
        return changed

    def drop_segment(self, segment: int) -> int:
        """Forget segment `segment` (it has no customer left); how many customers went."""
        return self.replace_segment(segment, ())

    def _add(self, customer: Customer) -> None:
        self.customers[customer.id] = customer
        tier = self.tier_orders.setdefault(customer.tier, {})
        for sort in SORTS:
            position = customer.position(sort)
            self.orders[sort].add(position)
            tier.setdefault(sort, SortedChunks()).add(position)
        for token in customer.tokens():
            self.tokens.add((token, customer.id))

    def _remove(self, customer: Customer) -> None:
        del self.customers[customer.id]
        tier = self.tier_orders.get(customer.tier, {})
        for sort in SORTS:
            position = customer.position(sort)
            self.orders[sort].discard(position)
            if sort in tier:
                tier[sort].discard(position)
        if tier and not len(tier[SORTS[0]]):
            del self.tier_orders[customer.tier]  # no customer of that tier left
        for token in customer.tokens():
            self.tokens.discard((token, customer.id))

    def count_prefix(self, prefix: str) -> int:
        """How many tokens start with `prefix` (call under `lock`)."""
        return self.tokens.count((prefix,), (prefix + _LAST_CHAR,))

    def with_prefix(self, prefix: str) -> list[int]:
        """The ids of customers with a token starting with `prefix` (an id may repeat, once per
        token); call under `lock`."""
        return [i for _, i in self.tokens.between((prefix,), (prefix + _LAST_CHAR,))]
