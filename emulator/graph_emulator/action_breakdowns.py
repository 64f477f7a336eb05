"""Insights ``action_breakdowns``: how the entries of the action lists are keyed.

Meta keys entries by ``action_type`` by default. With ``action_device`` each entry is split by
the device the action happened on (an exact split: the devices of one entry add up to it), and
each part carries an ``"action_device"`` key. Other action breakdowns are refused.
"""

from __future__ import annotations

from graph_emulator.breakdowns import ValueRng, value_weights
from graph_emulator.tally import Tally, split_amounts
from graph_emulator.wire import param_error, parse_name_list

__all__ = ["DEFAULT_ACTION_BREAKDOWNS", "parse_action_breakdowns", "split_by_device"]

DEFAULT_ACTION_BREAKDOWNS = ["action_type"]
_SUPPORTED = ("action_type", "action_device")
_NOT_EMULATED = frozenset(
    {
        "action_canvas_component_name",
        "action_carousel_card_id",
        "action_carousel_card_name",
        "action_destination",
        "action_reaction",
        "action_target_id",
        "action_video_sound",
        "action_video_type",
        "conversion_destination",
        "matched_persona_id",
        "matched_persona_name",
        "signal_source_bucket",
        "standard_event_content_type",
    }
)
_DEVICES = {
    "iphone": 35,
    "android_smartphone": 38,
    "desktop": 12,
    "ipad": 6,
    "android_tablet": 5,
    "other": 4,
}


def parse_action_breakdowns(raw: str | None) -> list[str]:
    """The action breakdowns asked for (default ``["action_type"]``), checked like Meta's."""
    names = parse_name_list(raw, "action_breakdowns") or list(DEFAULT_ACTION_BREAKDOWNS)
    known = sorted({*_SUPPORTED, *_NOT_EMULATED})
    for index, name in enumerate(names):
        if name not in known:
            raise param_error(
                f"action_breakdowns[{index}] must be one of the following values: "
                + ", ".join(known)
            )
        if name in _NOT_EMULATED:
            raise param_error(f"action_breakdowns={name} is not supported by the emulator")
    return names


def split_by_device(tally: Tally, rng_for: ValueRng) -> None:
    """Replace each entry of ``tally`` (one ad-day) by its parts per ``action_device``."""
    weights = value_weights("action_device", _DEVICES, rng_for)
    if not any(weights):
        weights = [1] * len(weights)
    for kind, entries in tally.lists.items():
        parts = {}
        for key, amounts in entries.items():
            pieces = split_amounts(amounts, weights)
            for device, piece in zip(_DEVICES, pieces, strict=True):
                if any(piece.values()):
                    parts[(*key, ("action_device", device))] = piece
        tally.lists[kind] = parts
