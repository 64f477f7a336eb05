"""Insights ``breakdowns``: one ad-day row split into a row per breakdown value combination.

The split is deterministic (weights keyed on the seed, the ad, the day and each value) and exact
(:func:`~graph_emulator.tally.split`): for every ad and day the broken-down rows add up to the
unbroken row to the impression and to the cent. Combinations Meta refuses are refused here
with Meta's code 100, and so are the breakdowns the emulator cannot produce faithfully.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from graph_emulator.tally import Tally, split
from graph_emulator.wire import param_error, parse_name_list

__all__ = [
    "FORBIDDEN_WITH_BREAKDOWNS",
    "Breakdowns",
    "ValueRng",
    "parse_breakdowns",
    "value_weights",
]

# Each supported breakdown's values with a base weight (a rough audience profile). A value
# with a small base is sometimes absent on a day (weight 0): its row is then left out.
_VALUES: dict[str, dict[str, int]] = {
    "age": {"13-17": 2, "18-24": 14, "25-34": 28, "35-44": 24, "45-54": 16, "55-64": 10, "65+": 6},
    "gender": {"female": 48, "male": 47, "unknown": 5},
    "country": {"US": 70, "CA": 12, "GB": 10, "AU": 8},
    "publisher_platform": {"facebook": 55, "instagram": 35, "audience_network": 6, "messenger": 4},
    "device_platform": {"mobile_app": 70, "mobile_web": 18, "desktop": 12},
    "impression_device": {
        "iphone": 35,
        "android_smartphone": 38,
        "desktop": 12,
        "ipad": 6,
        "android_tablet": 5,
        "other": 4,
    },
}
# Breakdowns whose values belong to a value of another one (a region lies in one country).
_NESTED: dict[str, tuple[str, dict[str, dict[str, int]]]] = {
    "region": (
        "country",
        {
            "US": {"California": 30, "New York": 25, "Texas": 25, "Florida": 20},
            "CA": {"Ontario": 60, "Quebec": 40},
            "GB": {"England": 85, "Scotland": 15},
            "AU": {"New South Wales": 55, "Victoria": 45},
        },
    ),
    "platform_position": (
        "publisher_platform",
        {
            "facebook": {
                "feed": 50,
                "facebook_reels": 20,
                "story": 15,
                "marketplace": 10,
                "search": 5,
            },
            "instagram": {"stream": 45, "story": 30, "reels": 20, "explore": 5},
            "audience_network": {"classic": 70, "rewarded_video": 30},
            "messenger": {"messenger_inbox": 70, "messenger_stories": 30},
        },
    ),
}
for _name, (_parent, _groups) in _NESTED.items():
    _VALUES[_name] = {v: w for group in _groups.values() for v, w in group.items()}
_RARE_BASE = 6  # values at or below this base weight are absent on some days

# Breakdowns Meta knows but the emulator does not produce (asked for: code 100, clearly).
_NOT_EMULATED = frozenset(
    {
        "ad_format_asset",
        "app_id",
        "body_asset",
        "call_to_action_asset",
        "description_asset",
        "dma",
        "frequency_value",
        "hourly_stats_aggregated_by_advertiser_time_zone",
        "hourly_stats_aggregated_by_audience_time_zone",
        "image_asset",
        "is_conversion_id_modeled",
        "link_url_asset",
        "media_asset_url",
        "media_creator",
        "media_destination_url",
        "media_format",
        "media_origin_url",
        "media_text_content",
        "mmm",
        "place_page_id",
        "product_id",
        "skan_campaign_id",
        "skan_conversion_id",
        "title_asset",
        "user_segment_key",
        "video_asset",
    }
)
_KNOWN = frozenset(_VALUES) | _NOT_EMULATED
_GEO_WITHOUT_DEMOGRAPHICS = (frozenset({"region", "dma"}), frozenset({"age", "gender"}))
# Fields Meta refuses in the same call as any breakdown.
FORBIDDEN_WITH_BREAKDOWNS = frozenset(
    {
        "app_store_clicks",
        "newsfeed_avg_position",
        "newsfeed_clicks",
        "relevance_score",
        "newsfeed_impressions",
    }
)

# (breakdown, value) -> the RNG drawing that value's weight for one ad-day.
ValueRng = Callable[[str, str], random.Random]


def parse_breakdowns(raw: str | None, action_breakdowns: list[str]) -> list[str]:
    """The ``breakdowns`` asked for, checked as Meta checks them; [] when none.

    Unknown names, refused combinations (region or dma with age or gender, platform_position
    without publisher_platform) and breakdowns the emulator does not produce are code 100.
    """
    names = parse_name_list(raw, "breakdowns")
    for index, name in enumerate(names):
        if name not in _KNOWN:
            raise param_error(
                f"breakdowns[{index}] must be one of the following values: "
                + ", ".join(sorted(_KNOWN))
            )
    chosen = set(names)
    geo, demographics = _GEO_WITHOUT_DEMOGRAPHICS
    if (chosen & geo and chosen & demographics) or (
        "platform_position" in chosen and "publisher_platform" not in chosen
    ):
        columns = ",".join(sorted({*action_breakdowns, *names}))
        raise param_error(f"Current combination of data breakdown columns ({columns}) is invalid")
    for name in names:
        if name in _NOT_EMULATED:
            raise param_error(
                f"breakdowns={name} is not supported by the emulator (it would return wrong "
                "data rather than none)"
            )
    return names


@dataclass(frozen=True)
class Breakdowns:
    """The breakdowns of one call: the value combinations and how a row is split over them."""

    names: tuple[str, ...]

    def combinations(self) -> list[tuple[str, ...]]:
        """Every valid value combination, in value order (a region only with its country)."""
        pools = [tuple(_VALUES[name]) for name in self.names]
        return [combo for combo in itertools.product(*pools) if self._consistent(combo)]

    def _consistent(self, combo: tuple[str, ...]) -> bool:
        values = dict(zip(self.names, combo, strict=True))
        for child, (parent, groups) in _NESTED.items():
            if child in values and parent in values and values[child] not in groups[values[parent]]:
                return False
        return True

    def split(self, tally: Tally, rng_for: ValueRng) -> list[tuple[tuple[str, ...], Tally]]:
        """``tally`` as one part per combination with a share; the parts sum exactly to it."""
        combos = self.combinations()
        weights = {
            name: {v: _weight(name, v, rng_for) for v in _VALUES[name]} for name in self.names
        }
        shares = [
            _product(weights[n][v] for n, v in zip(self.names, c, strict=True)) for c in combos
        ]
        if not any(shares):  # cannot happen with the profiles above; an even split if it did
            shares = [1] * len(combos)
        kept = [(combo, share) for combo, share in zip(combos, shares, strict=True) if share]
        parts = split(tally, [share for _, share in kept])
        return [(combo, part) for (combo, _), part in zip(kept, parts, strict=True)]

    def order(self, combo: tuple[str, ...]) -> tuple[int, ...]:
        """A sort key putting combinations in value order."""
        return tuple(
            list(_VALUES[name]).index(value) for name, value in zip(self.names, combo, strict=True)
        )


def value_weights(name: str, values: dict[str, int], rng_for: ValueRng) -> list[int]:
    """Integer weights of ``values`` of breakdown ``name`` for one ad-day."""
    return [_draw(base, rng_for(name, value)) for value, base in values.items()]


def _weight(name: str, value: str, rng_for: ValueRng) -> int:
    return _draw(_VALUES[name][value], rng_for(name, value))


def _draw(base: int, rng: random.Random) -> int:
    if base <= _RARE_BASE and rng.random() < 0.3:
        return 0
    return base * rng.randrange(60, 141)


def _product(numbers) -> int:
    result = 1
    for n in numbers:
        result *= n
    return result
