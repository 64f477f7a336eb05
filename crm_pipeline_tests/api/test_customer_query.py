"""The in-memory customer index and its pages against a plain filter-and-sort of the same
customers: every plan (walking the sort order, or picking candidates) gives the same pages, and
applying segments by difference leaves the same structures as loading them at once."""

from __future__ import annotations

import random

import pytest

from crm_pipeline.api import customer_query, sorted_chunks
from crm_pipeline.api.customer_query import Search, page, parse_query
from crm_pipeline.api.customer_search import Customer, CustomerSearch

FIRST = ["Ana", "Anabel", "Bruno", "Carla", "Dana", "ana-maria", "Zoë", None]
LAST = ["Silva", "Anas", "Costa", "O'Neil"]
TIERS = ["standard", "silver", "gold", "platinum"]
WIDTH = 16  # segments of this many ids, to have many


def _row(rng: random.Random, i: int) -> dict:
    first = rng.choice(FIRST)
    return {
        "id": i,
        "name": None if first is None else f"{first} {rng.choice(LAST)}",
        "email": rng.choice([None, f"{(first or 'x').lower()}{i}@ex.com"]),
        "phone": rng.choice([None, f"+1 555 {i:04d}"]),
        "tier": rng.choice(TIERS),
        "orders": rng.randint(0, 3),
        "revenue": rng.choice([0, 10.5, 20, 99.99]),
        "leads": 0,
        "updated_at": f"2026-01-0{rng.randint(1, 9)}T00:00:00.000000+00:00",
    }


def _load(segments: dict[int, list[dict]]) -> CustomerSearch:
    index = CustomerSearch()
    index.load({s: [Customer.from_row(r) for r in rows] for s, rows in segments.items()})
    return index


def _expected(index: CustomerSearch, sort: str, q: str | None, tier: str | None) -> list[int]:
    search = Search.parse(q)
    found = [
        c
        for c in index.customers.values()
        if (tier is None or c.tier == tier) and (search is None or search.matches(c))
    ]
    found.sort(key=lambda c: c.position(sort), reverse=sort != "name")
    return [c.id for c in found]


def _walk(index: CustomerSearch, sort: str, q: str | None, tier: str | None, limit: int):
    ids, cursor, cursors = [], None, set()
    while True:
        result = page(index, parse_query(limit, cursor, q, tier, sort))
        assert len(result.customers) <= limit
        ids += [c.id for c in result.customers]
        if result.next_cursor is None:
            return ids
        assert result.next_cursor not in cursors, "the pages went round in a circle"
        cursor = result.next_cursor
        cursors.add(cursor)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(sorted_chunks, "CHUNK", 4)  # splits and merges happen in a small index


@pytest.mark.parametrize(
    ("min_candidates", "walk_budget"),
    [(256, 2), (1, 2), (1, 0)],  # as shipped; candidates rarely; every search walk gives up
)
def test_every_plan_pages_exactly_like_a_full_sort_as_segments_change(
    monkeypatch, min_candidates, walk_budget
):
    monkeypatch.setattr(customer_query, "MIN_CANDIDATES", min_candidates)
    monkeypatch.setattr(customer_query, "WALK_BUDGET", walk_budget)
    rng = random.Random(7)
    segments: dict[int, list[dict]] = {}
    for i in range(1, 300):
        segments.setdefault(i // WIDTH, []).append(_row(rng, i))
    index = _load(segments)
    queries = [None, "ana", "an", "ana s", "+1 555 00", "555", "zo", "o'n", "x", "ana1", "a"]
    for _ in range(3):
        for sort in ("name", "revenue", "updated"):
            for q in queries:
                for tier in (None, "gold", "platinum", "none-such"):
                    for limit in (1, 3, 50):
                        expected = _expected(index, sort, q, tier)
                        assert _walk(index, sort, q, tier, limit) == expected, (sort, q, tier)
        for segment in rng.sample(sorted(segments), 6):  # rewritten: changed, gone, new
            rows = [_row(rng, r["id"]) for r in segments[segment] if rng.random() > 0.2]
            rows.append(_row(rng, segment * WIDTH + WIDTH - 1))
            segments[segment] = list({r["id"]: r for r in rows}.values())
            index.replace_segment(segment, [Customer.from_row(r) for r in segments[segment]])
        index.drop_segment(min(segments))
        del segments[min(segments)]
        fresh = _load(segments)
        for sort in ("name", "revenue", "updated"):
            assert list(index.orders[sort]) == list(fresh.orders[sort])
        assert list(index.tokens) == list(fresh.tokens)
        assert index.customers == fresh.customers
        assert {
            t: {s: list(o) for s, o in orders.items()} for t, orders in index.tier_orders.items()
        } == {t: {s: list(o) for s, o in orders.items()} for t, orders in fresh.tier_orders.items()}


def test_sorted_chunks_walk_from_any_point_both_ways():
    rng = random.Random(3)
    items = rng.sample(range(1000), 200)
    chunks = sorted_chunks.SortedChunks(items)
    for extra in rng.sample(range(1000, 1100), 50):
        chunks.add(extra)
        items.append(extra)
    for gone in rng.sample(items, 80):
        assert chunks.discard(gone)
        items.remove(gone)
    assert not chunks.discard(-1)
    ordered = sorted(items)
    assert list(chunks) == ordered and len(chunks) == len(ordered)
    for probe in (-1, 0, 500, 999, 1099, 2000, *rng.sample(ordered, 20)):
        assert list(chunks.after(probe)) == [x for x in ordered if x > probe]
        assert list(chunks.before(probe)) == [x for x in reversed(ordered) if x < probe]
        assert list(chunks.from_(probe)) == [x for x in ordered if x >= probe]
    assert list(chunks.before(None)) == ordered[::-1]
    for low, high in [
        (-5, 5000),
        (10, 10),
        (500, 20),
        *zip(rng.sample(ordered, 30), rng.sample(range(1200), 30), strict=True),
    ]:
        inside = [x for x in ordered if low <= x < high]
        assert chunks.between(low, high) == inside and chunks.count(low, high) == len(inside)
