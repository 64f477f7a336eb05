"""What we ask Meta for: every Graph API field list and the insight parameters.

The one place to change when a stream needs another field, a custom insight metric or a
breakdown (docs/architecture.md, "add a new Meta stream"). The raw landing keeps exactly the
columns of ``RAW_FIELDS`` / ``INSIGHT_FIELDS``, so a field added here also lands in Parquet.
"""

from __future__ import annotations

from datetime import date
from typing import Any

__all__ = [
    "AD_ACCOUNT_FIELDS",
    "AD_FIELDS",
    "ADSET_FIELDS",
    "CAMPAIGN_FIELDS",
    "CONVERSATION_FIELDS",
    "INSIGHT_FIELDS",
    "LEAD_FIELDS",
    "LEAD_FORM_FIELDS",
    "MESSAGE_FIELDS",
    "OBJECT_FIELDS",
    "RAW_FIELDS",
    "insight_params",
    "nested_messages",
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
    "actions",  # kept whole; lead counts are extracted from it
)
# One row per ad and day: the grain of `ad_insights_daily`.
INSIGHT_LEVEL = "ad"
# The SDK types time_increment as a string ("1", "monthly", "all_days"); an int and a str both
# go out as "1" on the wire, the str simply matches the declared type.
INSIGHT_TIME_INCREMENT = "1"


def insight_params(
    since: date,
    until: date,
    *,
    limit: int | None = None,
    only: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The parameters of a daily, ad-level insights read for ``since..until`` (inclusive).

    ``only=(level, object_id)`` (level ``campaign``, ``adset`` or ``ad``) narrows the read to
    one object, as the split jobs of an async report run do.
    """
    params: dict[str, Any] = {
        "level": INSIGHT_LEVEL,
        "time_increment": INSIGHT_TIME_INCREMENT,
        "time_range": {"since": since.isoformat(), "until": until.isoformat()},
    }
    if only is not None:
        level, object_id = only
        params["filtering"] = [{"field": f"{level}.id", "operator": "IN", "value": [object_id]}]
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
    "created_time",
    "updated_time",
)
# Object kind (the AdAccount edge) -> its fields.
OBJECT_FIELDS = {"campaigns": CAMPAIGN_FIELDS, "adsets": ADSET_FIELDS, "ads": AD_FIELDS}

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
