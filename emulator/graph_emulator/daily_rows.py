"""Ad-level daily insight rows: a pure function of (seed, ad, day), computed once and stored.

Numbers come from private RNG streams keyed by the seed, the ad id and the date, so any date
range can be asked for, in any order, and the same day always yields the same row. Each row is
computed on first use and then looked up: every page of a paged range asks for the whole range
again, and a real Graph server has its numbers stored too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from graph_emulator.tally import frequency

__all__ = ["AdIds", "DailyRows"]

# (account_id, campaign_id, adset_id, ad_id): all a row needs of its ad. None of them ever changes
# once the data is built, so a tuple of them is a safe snapshot of an ad.
AdIds = tuple[str, str, str, str]


class DailyRows:
    """The stored rows, keyed by ad ids and day. Safe to share between threads."""

    def __init__(self, stream: Callable[..., random.Random]) -> None:
        self._stream = stream
        self._rows: dict[tuple[str, str, str, str, date], dict] = {}
        self._traits: dict[str, tuple[int, float, float, float]] = {}

    def rows(self, ads: Sequence[AdIds], since: date, until: date) -> list[dict]:
        """The stored rows of ``ads`` for ``since..until``, by date then ad order (read-only)."""
        rows = []
        day = since
        while day <= until:
            for ids in ads:
                key = (*ids, day)
                row = self._rows.get(key)
                if row is None:
                    # setdefault is atomic: threads racing on one row all get the stored one.
                    row = self._rows.setdefault(key, self._row(ids, day))
                rows.append(row)
            day += timedelta(days=1)
        return rows

    def _ad_traits(self, ad_id: str) -> tuple[int, float, float, float]:
        """Base impressions, CTR, CPM and reach ratio: fixed across days, so each ad has a
        recognisable profile. Drawn once per ad (seeding a stream is half a row's cost)."""
        traits = self._traits.get(ad_id)
        if traits is None:
            rng = self._stream("ad", ad_id)
            # A tuple display evaluates left to right: the draw order is part of the data.
            drawn = (
                rng.randrange(400, 6000),
                rng.uniform(0.004, 0.035),
                rng.uniform(4.0, 22.0),
                rng.uniform(0.55, 0.95),
            )
            traits = self._traits.setdefault(ad_id, drawn)
        return traits

    def _row(self, ids: AdIds, day: date) -> dict:
        account_id, campaign_id, adset_id, ad_id = ids
        base_impressions, ctr, cpm, reach_ratio = self._ad_traits(ad_id)
        daily = self._stream("day", ad_id, day.isoformat())
        weekend = 0.8 if day.weekday() >= 5 else 1.0
        impressions = max(1, int(base_impressions * weekend * daily.uniform(0.6, 1.4)))
        clicks = min(impressions, int(impressions * ctr * daily.uniform(0.7, 1.3)))
        reach = min(impressions, max(1, int(impressions * reach_ratio * daily.uniform(0.9, 1.0))))
        spend = Decimal(impressions * cpm * daily.uniform(0.85, 1.15) / 1000).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
        stamp = day.isoformat()
        # Meta's actions list: link clicks, and Lead Ads leads on some days.
        leads = daily.choices((0, 1, 2, 3), weights=(70, 18, 8, 4))[0]
        actions = [{"action_type": "link_click", "value": str(clicks)}] if clicks else []
        if leads:
            actions += [
                {"action_type": "lead", "value": str(leads)},
                {"action_type": "onsite_conversion.lead_grouped", "value": str(leads)},
            ]
        # Drawn after every older number, so adding purchases changed none of them.
        purchases = daily.choices((0, 1, 2, 3), weights=(78, 14, 6, 2))[0]
        revenue_cents = sum(daily.randrange(1500, 15000) for _ in range(purchases))
        row = {
            "account_id": account_id,
            "campaign_id": campaign_id,
            "adset_id": adset_id,
            "ad_id": ad_id,
            "date_start": stamp,
            "date_stop": stamp,
            "impressions": str(impressions),
            "clicks": str(clicks),
            "spend": f"{spend:.2f}",
            "reach": str(reach),
            "frequency": frequency(impressions, reach),
        }
        if purchases:
            actions += _purchase_entries(str(purchases))
            row["action_values"] = _purchase_entries(f"{Decimal(revenue_cents) / 100:.2f}")
            row["conversions"] = [{"action_type": "purchase", "value": str(purchases)}]
        if actions:  # Meta leaves an empty list out of the row
            row["actions"] = actions
        return row


def _purchase_entries(value: str) -> list[dict]:
    """A purchase as Meta lists it: the generic type and the pixel's, with the same value."""
    return [
        {"action_type": "purchase", "value": value},
        {"action_type": "offsite_conversion.fb_pixel_purchase", "value": value},
    ]
