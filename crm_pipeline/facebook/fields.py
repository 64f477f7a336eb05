"""What we ask Meta for: every Graph API field list and the insight parameters.

The one place to change when a stream needs another field, a custom insight metric or a
breakdown (docs/architecture.md, "add a new Meta stream"). The raw landing keeps exactly the
columns of ``RAW_FIELDS`` / ``INSIGHT_FIELDS``, so a field added here also lands in Parquet.
"""

from __future__ import annotations

from datetime import date
from typing import Any

__all__ = [
    "ACCOUNT_INSIGHT_FIELDS",
    "ACCOUNT_LEVEL",
    "AD_ACCOUNT_FIELDS",
    "AD_EFFECTIVE_STATUSES",
    "AD_FIELDS",
    "ADSET_FIELDS",
    "CAMPAIGN_FIELDS",
    "CONVERSATION_FIELDS",
    "EFFECTIVE_STATUSES",
    "INSIGHT_FIELDS",
    "LEAD_FIELDS",
    "LEAD_FORM_FIELDS",
    "MESSAGE_FIELDS",
    "OBJECT_FIELDS",
    "RAW_FIELDS",
    "insight_params",
    "nested_messages",
    "object_filters",
]

# -- insights --------------------------------------------------------------------------------------

INSIGHT_FIELDS = (
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
    "frequency",  # impressions / reach, a decimal string
    "actions",  # kept whole; lead and purchase counts are extracted from it
    "action_values",  # kept whole; the purchase value is extracted from it
    "conversions",  # kept whole
)
# One row per ad and day: the grain of `ad_insights_daily`.
INSIGHT_LEVEL = "ad"
# Meta's own totals of an ad account and day, read beside the ad rows to reconcile them
# (`ad_account_insights_daily`, the `matches_account_totals` check).
ACCOUNT_LEVEL = "account"
ACCOUNT_INSIGHT_FIELDS = (
    "account_id",
    "date_start",
    "date_stop",
    "spend",
    "impressions",
    "clicks",
)
# The SDK types time_increment as a string ("1", "monthly", "all_days"); an int and a str both
# go out as "1" on the wire, the str simply matches the declared type.
INSIGHT_TIME_INCREMENT = "1"
# Every ad effective status. Without an `ad.effective_status` filter Meta leaves the rows of
# deleted and archived ads out of an account's insights, so their spend would vanish from
# history; asking for every status keeps them (and the account totals stay comparable).
AD_EFFECTIVE_STATUSES = (
    "ACTIVE",
    "PAUSED",
    "DELETED",
    "ARCHIVED",
    "CAMPAIGN_PAUSED",
    "ADSET_PAUSED",
    "IN_PROCESS",
    "WITH_ISSUES",
    "PENDING_REVIEW",
    "DISAPPROVED",
    "PREAPPROVED",
    "PENDING_BILLING_INFO",
)


def insight_params(
    since: date,
    until: date,
    *,
    limit: int | None = None,
    only: tuple[str, str] | None = None,
    level: str = INSIGHT_LEVEL,
) -> dict[str, Any]:
    """The parameters of a daily insights read for ``since..until`` (inclusive).

    ``level`` is ``ad`` (the default: one row per ad and day) or ``account`` (Meta's own totals
    of the account and day). Every status of ad is asked for (``AD_EFFECTIVE_STATUSES``).
    ``only=(level, object_id)`` (level ``campaign``, ``adset`` or ``ad``) narrows the read to
    one object too, as the split jobs of an async report run do.
    """
    filtering = [
        {"field": "ad.effective_status", "operator": "IN", "value": list(AD_EFFECTIVE_STATUSES)}
    ]
    if only is not None:
        only_level, object_id = only
        filtering.append({"field": f"{only_level}.id", "operator": "IN", "value": [object_id]})
    params: dict[str, Any] = {
        "level": level,
        "time_increment": INSIGHT_TIME_INCREMENT,
        "time_range": {"since": since.isoformat(), "until": until.isoformat()},
        "filtering": filtering,
    }
    if limit is not None:
        params["limit"] = limit
    return params


# -- ad account and its objects --------------------------------------------------------------------

AD_ACCOUNT_FIELDS = ("id", "account_id", "name", "currency", "timezone_name", "account_status")
CAMPAIGN_FIELDS = (
    "id",
    "account_id",
    "name",
    "status",
    "effective_status",
    "objective",
    "created_time",
    "updated_time",
)
ADSET_FIELDS = (
    "id",
    "account_id",
    "campaign_id",
    "name",
    "status",
    "effective_status",
    "created_time",
    "updated_time",
)
AD_FIELDS = (
    "id",
    "account_id",
    "campaign_id",
    "adset_id",
    "name",
    "status",
    "effective_status",
    "created_time",
    "updated_time",
)
# Object kind (the AdAccount edge) -> its fields.
OBJECT_FIELDS = {"campaigns": CAMPAIGN_FIELDS, "adsets": ADSET_FIELDS, "ads": AD_FIELDS}
# Every effective_status Meta has (one enum for campaigns, ad sets and ads). Without an
# effective_status filter the object edges leave out DELETED and ARCHIVED objects, whose names
# the insights of their spend still need.
EFFECTIVE_STATUSES = AD_EFFECTIVE_STATUSES


def object_filters(updated_after: int | None = None) -> list[dict[str, Any]]:
    """The ``filtering`` of an object edge read: every status (deleted and archived included),
    and, for an incremental read, only objects updated after a unix time."""
    filters: list[dict[str, Any]] = [
        {"field": "effective_status", "operator": "IN", "value": list(EFFECTIVE_STATUSES)}
    ]
    if updated_after is not None:
        filters.append(
            {"field": "updated_time", "operator": "GREATER_THAN", "value": updated_after}
        )
    return filters


# -- the page: lead forms, leads, Messenger --------------------------------------------------------

LEAD_FORM_FIELDS = ("id", "name", "status", "created_time")
LEAD_FIELDS = ("id", "created_time", "ad_id", "campaign_id", "form_id", "field_data")
MESSAGE_FIELDS = ("id", "message", "from", "created_time")
CONVERSATION_FIELDS = ("id", "updated_time", "participants")


def nested_messages(page_size: int) -> str:
    """The field that brings a conversation's first ``page_size`` messages in the same call."""
    return f"messages.limit({page_size}){{{','.join(MESSAGE_FIELDS)}}}"


# -- the raw landing -------------------------------------------------------------------------------

# Stream -> the columns its Parquet files hold: Meta's fields plus the ids the readers add
# (a lead's page, a message's conversation, a conversation's page and PSID).
RAW_FIELDS = {
    "ad_accounts": AD_ACCOUNT_FIELDS,
    # The ad objects land exactly the fields the client requests.
    **OBJECT_FIELDS,
    "leads": ("id", "form_id", "ad_id", "campaign_id", "page_id", "created_time", "field_data"),
    "conversations": ("id", "page_id", "psid", "updated_time", "participants"),
    "messages": ("id", "conversation_id", "from", "message", "created_time"),
}


# -- custom insights (CRM_CUSTOM_INSIGHTS) ---------------------------------------------------------
# What an entry of the custom insights file may ask for (`crm_pipeline/facebook/custom_insights.py`
# checks every entry against these when the code location loads) and how each field is stored.
# Meta's reference: developers.facebook.com/docs/marketing-api/insights/parameters and
# .../insights/breakdowns ("Limitations"). Add a field or breakdown here to allow it.

# This section's names, listed apart from the built-in streams'.
__all__ += [
    "CUSTOM_ACTION_BREAKDOWNS",
    "CUSTOM_ATTRIBUTION_WINDOWS",
    "CUSTOM_BREAKDOWN_NEEDS",
    "CUSTOM_BREAKDOWNS",
    "CUSTOM_DEMOGRAPHIC_BREAKDOWNS",
    "CUSTOM_FIELDS_NOT_HOURLY",
    "CUSTOM_FIELDS_WITHOUT_BREAKDOWNS",
    "CUSTOM_GEO_BREAKDOWNS",
    "CUSTOM_HOURLY_BREAKDOWNS",
    "CUSTOM_INSIGHT_FIELDS",
    "CUSTOM_LEVEL_IDS",
    "CUSTOM_OBJECT_FIELDS",
    "REMOVED_ATTRIBUTION_WINDOWS",
]

# Level -> the id fields of its rows, outermost first: the id columns of a custom table.
CUSTOM_LEVEL_IDS = {
    "account": ("account_id",),
    "campaign": ("account_id", "campaign_id"),
    "adset": ("account_id", "campaign_id", "adset_id"),
    "ad": ("account_id", "campaign_id", "adset_id", "ad_id"),
}
# Fields naming an object -> the level of that object: Meta refuses them at a higher level
# (an ad_id at campaign level is error 100).
CUSTOM_OBJECT_FIELDS = {
    "account_id": "account",
    "account_name": "account",
    "campaign_id": "campaign",
    "campaign_name": "campaign",
    "adset_id": "adset",
    "adset_name": "adset",
    "ad_id": "ad",
    "ad_name": "ad",
}
# Field -> how its values are stored: `integer` (bigint), `decimal` (numeric), `json` (jsonb:
# lists such as actions kept whole, each entry with its attribution-window keys), `text`.
CUSTOM_INSIGHT_FIELDS = {
    **dict.fromkeys(CUSTOM_OBJECT_FIELDS, "text"),
    **dict.fromkeys(
        (
            "impressions",
            "clicks",
            "reach",
            "unique_clicks",
            "inline_link_clicks",
            "unique_inline_link_clicks",
            "inline_post_engagement",
            "full_view_impressions",
            "full_view_reach",
        ),
        "integer",
    ),
    **dict.fromkeys(
        (
            "spend",
            "frequency",
            "cpc",
            "cpm",
            "cpp",
            "ctr",
            "unique_ctr",
            "cost_per_unique_click",
            "inline_link_click_ctr",
            "cost_per_inline_link_click",
            "cost_per_inline_post_engagement",
            "social_spend",
        ),
        "decimal",
    ),
    **dict.fromkeys(
        (
            "actions",
            "action_values",
            "conversions",
            "conversion_values",
            "cost_per_action_type",
            "cost_per_conversion",
            "unique_actions",
            "outbound_clicks",
            "outbound_clicks_ctr",
            "cost_per_outbound_click",
            "purchase_roas",
            "website_purchase_roas",
            "video_play_actions",
            "video_p25_watched_actions",
            "video_p50_watched_actions",
            "video_p75_watched_actions",
            "video_p100_watched_actions",
            "website_ctr",
        ),
        "json",
    ),
    **dict.fromkeys(
        (
            "account_currency",
            "objective",
            "optimization_goal",
            "buying_type",
            "attribution_setting",
            "quality_ranking",
            "engagement_rate_ranking",
            "conversion_rate_ranking",
        ),
        "text",
    ),
}
CUSTOM_DEMOGRAPHIC_BREAKDOWNS = ("age", "gender")
CUSTOM_GEO_BREAKDOWNS = ("region", "dma")  # Meta refuses them with age or gender
CUSTOM_HOURLY_BREAKDOWNS = (
    "hourly_stats_aggregated_by_advertiser_time_zone",
    "hourly_stats_aggregated_by_audience_time_zone",
)
CUSTOM_BREAKDOWNS = (
    *CUSTOM_DEMOGRAPHIC_BREAKDOWNS,
    "country",
    *CUSTOM_GEO_BREAKDOWNS,
    "publisher_platform",
    "platform_position",
    "device_platform",
    "impression_device",
    *CUSTOM_HOURLY_BREAKDOWNS,
)
# Breakdown -> the breakdown Meta requires beside it.
CUSTOM_BREAKDOWN_NEEDS = {"platform_position": "publisher_platform"}
# Fields Meta refuses with any breakdown (its breakdowns page still lists them) and no longer
# returns without one either: an entry naming one is refused, saying both.
CUSTOM_FIELDS_WITHOUT_BREAKDOWNS = (
    "app_store_clicks",
    "newsfeed_avg_position",
    "newsfeed_clicks",
    "relevance_score",
    "newsfeed_impressions",
)
# Fields Meta does not report with an hourly breakdown.
CUSTOM_FIELDS_NOT_HOURLY = ("reach", "frequency")
CUSTOM_ACTION_BREAKDOWNS = (
    "action_type",
    "action_device",
    "action_destination",
    "action_target_id",
    "action_reaction",
    "action_video_sound",
    "action_video_type",
    "action_carousel_card_id",
    "action_carousel_card_name",
    "action_canvas_component_name",
)
CUSTOM_ATTRIBUTION_WINDOWS = ("1d_click", "7d_click", "28d_click", "1d_view", "1d_ev")
# Windows Meta no longer returns -> since when.
REMOVED_ATTRIBUTION_WINDOWS = {"7d_view": "2026-01-12", "28d_view": "2026-01-12"}
