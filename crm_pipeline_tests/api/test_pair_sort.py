"""`sort_pairs` gives exactly Python's order, through Arrow or not."""

from __future__ import annotations

import random

import pytest

from crm_pipeline.api import pair_sort
from crm_pipeline.api.pair_sort import sort_order, sort_pairs

ALPHABET = "aAzZ éÉßñ日本\U0001f600-.'0"


def _words(rng: random.Random, n: int) -> list[tuple[str, int]]:
    return [
        ("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6))).casefold(), i)
        for i in rng.sample(range(-n, n), n)
    ]


@pytest.mark.parametrize("n", [10, pair_sort.ARROW_FROM * 3])
def test_strings_sort_as_python_compares_them_code_point_by_code_point(n):
    pairs = _words(random.Random(n), n)  # many equal words: ties go by the id
    assert sort_pairs(pairs) == sorted(pairs)


def test_numbers_sort_as_python_compares_them():
    rng = random.Random(7)
    n = pair_sort.ARROW_FROM * 3
    money = [(float(rng.randint(0, 50)) / 4, -i) for i in range(n)]  # ties, ids negated
    assert sort_pairs(money) == sorted(money)
    mixed = [(rng.choice([0, 1.5, -2, 3.25]), i) for i in range(n)]  # ints and floats
    assert sort_pairs(mixed) == sorted(mixed)


def test_values_arrow_cannot_hold_are_sorted_by_python():
    n = pair_sort.ARROW_FROM * 2
    lone_surrogates = [("\ud800x" if i % 3 else "a", n - i) for i in range(n)]  # not UTF-8
    assert sort_pairs(lone_surrogates) == sorted(lone_surrogates)
    # Integers a double cannot hold exactly, beside floats: Arrow refuses to convert them.
    huge = [(2**60 + i % 3 if i % 2 else float(2**60), i) for i in range(n)]
    assert sort_pairs(huge) == sorted(huge)
    tuples = [((i % 5, "x"), i) for i in range(n)]
    assert sort_pairs(tuples) == sorted(tuples)


def test_the_order_names_the_pairs_passed():
    pairs = _words(random.Random(3), pair_sort.ARROW_FROM * 2)
    order, ordered = sort_order(pairs), sort_pairs(pairs)
    assert sorted(order) == list(range(len(pairs)))
    assert all(ordered[k] is pairs[i] for k, i in enumerate(order))


@pytest.mark.parametrize("n", [10, pair_sort.ARROW_FROM * 3])
def test_places_are_grouped_by_key_in_ascending_order(n):
    rng = random.Random(n)
    keys = [rng.choice(["gold", "silver", "", None, "Ünïcode"]) for _ in range(n)]
    expected: dict = {}
    for place, key in enumerate(keys):
        expected.setdefault(key, []).append(place)
    assert pair_sort.group_places(keys) == expected
