"""``action_attribution_windows``: per-window action values, as Meta reports them since 2026.

Asked for windows, Meta adds one key per window to every entry of ``actions``,
``action_values`` and ``conversions`` (``{"action_type": "purchase", "value": "3",
"1d_click": "1", "7d_click": "2", "1d_view": "1"}``); ``value`` stays the default attribution,
7-day click plus 1-day view. Meta stopped returning the 7- and 28-day view windows on
2026-01-12 and refuses them since.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from graph_emulator.tally import WINDOWS, Tally
from graph_emulator.wire import param_error, parse_name_list

__all__ = ["attribute", "parse_windows"]

# `default` asks for the default attribution only: it is `value`, so it adds no key.
_ACCEPTED = frozenset({*WINDOWS, "default"})
_REMOVED = frozenset({"7d_view", "28d_view"})
# Windows Meta knows that the emulator does not model (asked for: code 100, clearly).
_NOT_EMULATED = frozenset(
    {
        "1d_sequenced",
        "7d_sequenced",
        "28d_sequenced",
        "7d_view_all_conversions",
        "7d_view_first_conversion",
        "28d_view_all_conversions",
        "28d_view_first_conversion",
        "custom",
        "dda",
        "incrementality",
        "incrementality_all_conversions",
        "incrementality_first_conversion",
        "skan_click",
        "skan_view",
    }
)

# (kind, action_type) -> the RNG that draws that entry's windows for one ad-day.
EntryRng = Callable[[str, str], random.Random]


def parse_windows(raw: str | None) -> list[str]:
    """The windows asked for (comma-separated or a JSON list), in Meta's order; [] if none.

    The removed view windows and unknown names are code 100, as Meta answers them.
    """
    names = parse_name_list(raw, "action_attribution_windows")
    for name in names:
        if name in _REMOVED:
            raise param_error(
                f"action_attribution_windows value {name} is no longer supported: Meta stopped "
                "returning 7d_view and 28d_view on 2026-01-12"
            )
        if name in _NOT_EMULATED:
            raise param_error(
                f"action_attribution_windows value {name} is not supported by the emulator"
            )
        if name not in _ACCEPTED:
            raise param_error(
                f"action_attribution_windows[{names.index(name)}] must be one of the following "
                f"values: {', '.join(sorted(_ACCEPTED | _NOT_EMULATED))}"
            )
    return [window for window in WINDOWS if window in names]


def attribute(tally: Tally, rng_for: EntryRng) -> None:
    """Give every entry of ``tally`` (one ad-day, not yet split) its per-window amounts.

    ``value`` is split into a 7-day-click and a 1-day-view part; 1-day click is a share of the
    7-day and 28-day click adds to it, so 1d_click <= 7d_click <= 28d_click. ``rng_for`` keys
    the draws on the ad, day, list and action type, so they never move another number.
    """
    for kind, entries in tally.lists.items():
        for key, amounts in entries.items():
            action_type = dict(key)["action_type"]
            amounts.update(_windows(amounts["value"], rng_for(kind, action_type)))


def _windows(value: int, rng: random.Random) -> dict[str, int]:
    view = value * rng.randrange(0, 31) // 100
    click7 = value - view
    click1 = click7 - click7 * rng.randrange(0, 41) // 100
    click28 = click7 + max(click7, 1) * rng.randrange(0, 31) // 100
    engaged = view * rng.randrange(0, 51) // 100
    return {
        "value": click7 + view,
        "1d_click": click1,
        "7d_click": click7,
        "28d_click": click28,
        "1d_view": view,
        "1d_ev": engaged,
    }
