"""Exact integer apportionment: split a whole number by weights so the parts add up exactly.

Broken-down insight rows must sum to the unbroken row to the unit (an impression, a cent), the
way an analyst checks them; rounding each share independently would drift by a unit or two.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["apportion"]


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` (>= 0) into parts proportional to integer ``weights`` (largest remainder).

    The parts are non-negative and sum exactly to ``total``; a zero weight always gets 0. Ties
    between equal remainders go to the earlier weight, so the split is deterministic.
    """
    weight_sum = sum(weights)
    if total < 0 or weight_sum <= 0 or any(w < 0 for w in weights):
        raise ValueError("apportion needs a non-negative total and positive total weight")
    parts = [total * w // weight_sum for w in weights]
    left = total - sum(parts)
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for index in by_remainder[:left]:
        parts[index] += 1
    return parts
