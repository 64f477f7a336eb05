"""The ``fields`` an insights call may ask for, checked the way Meta checks them.

A name Meta does not know (or no longer accepts) is Meta's ``(#100) <name> is not valid for
fields param``; a real Meta field the emulator does not compute is refused as such rather than
answered with made-up numbers; a few fields may not be combined with breakdowns.
"""

from __future__ import annotations

from graph_emulator.breakdowns import FORBIDDEN_WITH_BREAKDOWNS
from graph_emulator.derived import DERIVED
from graph_emulator.labels import LABELS
from graph_emulator.wire import param_error

__all__ = ["SERVED", "check_insight_fields"]

SERVED = frozenset(
    {
        "account_id",
        "campaign_id",
        "adset_id",
        "ad_id",
        "date_start",
        "date_stop",
        "impressions",
        "clicks",
        "spend",
        "reach",
        "frequency",
        "actions",
        "action_values",
        "conversions",
        *DERIVED,
        *LABELS,
    }
)
# Current Meta insights fields the emulator has no numbers for.
_NOT_EMULATED = frozenset(
    {
        "attribution_setting",
        "buying_type",
        "conversion_rate_ranking",
        "cost_per_inline_link_click",
        "cost_per_inline_post_engagement",
        "cost_per_outbound_click",
        "cost_per_unique_click",
        "engagement_rate_ranking",
        "full_view_impressions",
        "full_view_reach",
        "inline_post_engagement",
        "outbound_clicks",
        "outbound_clicks_ctr",
        "quality_ranking",
        "social_spend",
        "unique_actions",
        "unique_inline_link_clicks",
        "video_p50_watched_actions",
        "video_p75_watched_actions",
        "video_p100_watched_actions",
        "website_purchase_roas",
        "conversion_values",
        "cost_per_action_type",
        "cost_per_conversion",
        "inline_link_click_ctr",
        "optimization_goal",
        "purchase_roas",
        "unique_clicks",
        "unique_ctr",
        "video_p25_watched_actions",
        "video_play_actions",
        "website_ctr",
    }
)
_DOCS = "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/"


def check_insight_fields(fields: list[str], *, with_breakdowns: bool) -> None:
    """Raise Meta's code 100 for the first problem with ``fields``, if any."""
    if with_breakdowns:
        forbidden = [f for f in fields if f in FORBIDDEN_WITH_BREAKDOWNS]
        if forbidden:
            raise param_error(f"{', '.join(forbidden)} cannot be requested with breakdowns")
    invalid = [f for f in fields if f not in SERVED and f not in _NOT_EMULATED]
    if invalid:
        verb = "is" if len(invalid) == 1 else "are"
        raise param_error(
            f"{', '.join(invalid)} {verb} not valid for fields param. please check {_DOCS} "
            "for all valid values"
        )
    missing = [f for f in fields if f in _NOT_EMULATED]
    if missing:
        raise param_error(f"{', '.join(missing)}: not supported by the emulator")
