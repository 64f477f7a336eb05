"""The typed shape of summary.json: one pydantic model per section.

These models are the contract analysts read: `docs/schemas/summary.schema.json` is generated
from `SummaryFile` (`python -m crm_pipeline.cache.summary_schema`), so every field's meaning is
its `description` here. `kpis.py` fills `Summary` from SQL; the cache writer adds the envelope
(`generated_at`, `watermark`, `schema_version`) that `SummaryFile` describes too.

Dumped in Python mode (`model_dump()`), money stays `Decimal` so `cachefile.dumps` writes it as
an exact JSON number, and dates and timestamps become ISO 8601 strings.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PlainSerializer, WithJsonSchema

# Bump when the document's shape or the meaning of a field changes. 3: Meta's reported
# purchases, purchase value and meta_roas in the roas section. 4: ad_spend.by_day.
SUMMARY_SCHEMA_VERSION = 4
LEAD_SOURCES = ("facebook_lead_ads", "other")
LeadSource = Literal["facebook_lead_ads", "other"]

_DATE = r"^\d{4}-\d{2}-\d{2}$"
_DATE_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"

# Written by `cachefile.dumps` as a JSON number with every stored digit (pydantic's default
# schema for Decimal would say "string", which is not what the file holds).
Money = Annotated[Decimal, WithJsonSchema({"type": "number"})]
Count = NonNegativeInt
Day = Annotated[
    dt.date,
    PlainSerializer(dt.date.isoformat),
    WithJsonSchema({"type": "string", "format": "date", "pattern": _DATE}),
]
# The pattern backs up "date-time", which jsonschema only checks with an optional package.
Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(lambda value: value.astimezone(dt.UTC).isoformat()),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _DATE_TIME}),
]

_MONEY = (
    "Exact decimal amount (the JSON number carries every digit stored in PostgreSQL; parse it "
    "as a decimal, not a float, if cents matter)."
)
_MIXED = " Null when revenue orders use more than one currency (see revenue.by_currency)."
_WINDOW = "the 30-day window (window_30_days, UTC days, today included)"
_CAMPAIGN_ID = "Meta campaign id, as in ad_insights_daily.campaign_id."
_CAMPAIGN_NAME = "Campaign name from the campaigns table; null if not synced."
_META_VIEW = (
    "Meta's own attribution (its attribution windows; pixel, app and offline purchase "
    "events), not the first-touch attribution from orders above: the two can differ, and "
    "neither is wrong. In the ad accounts' currency, like spend."
)
_META_PURCHASES = (
    "Purchases Meta reports for {what} (ad_insights_daily.purchases: the `purchase` action, "
    "else `offsite_conversion.fb_pixel_purchase`, never both), all time."
)
_META_VALUE = (
    "Purchase value Meta reports for {what} (ad_insights_daily.purchase_value, from "
    "action_values like meta_purchases), all time. " + _MONEY
)
_META_ROAS = (
    "Meta-reported ROAS: meta_purchase_value / spend, rounded half away from zero to 4 "
    "places; null when spend is 0. " + _META_VIEW
)


class _Model(BaseModel):
    # Strict shape: the generated schema then says `additionalProperties: false` too.
    model_config = ConfigDict(extra="forbid")


class Window(_Model):
    """The 30-day window."""

    first_day: Day = Field(description="First day.")
    last_day: Day = Field(description="Last day (= as_of).")


class MonthRevenue(_Model):
    """One month in one currency."""

    month: str = Field(description="Month as YYYY-MM (UTC).", pattern=r"^\d{4}-\d{2}$")
    currency: str = Field(description="ISO 4217 currency code of these orders.")
    revenue: Money = Field(description=f"Revenue of the month. {_MONEY}")
    orders: Count = Field(description="Revenue orders in the month.")


class CurrencyRevenue(_Model):
    """Revenue in one currency."""

    currency: str = Field(description="ISO 4217 currency code.")
    total: Money = Field(description=f"All-time revenue in this currency. {_MONEY}")
    orders: Count = Field(description="Revenue orders in this currency.")
    last_30_days: Money = Field(description=f"Revenue of orders created in {_WINDOW}.")
    orders_last_30_days: Count = Field(description=f"Revenue orders created in {_WINDOW}.")
    average_order_value: Money = Field(description="total / orders, rounded to 2 places.")


class Revenue(_Model):
    """The revenue section."""

    statuses: list[str] = Field(description="Order statuses counted as revenue.")
    currency: str | None = Field(
        description="The single currency of all revenue orders; null when there are none or "
        "several."
    )
    total: Money | None = Field(
        description=f"All-time revenue. {_MONEY} 0 when there are no orders.{_MIXED}"
    )
    last_30_days: Money | None = Field(
        description=f"Revenue of orders created in {_WINDOW}.{_MIXED}"
    )
    orders: Count = Field(description="Number of revenue orders, all time, all currencies.")
    orders_last_30_days: Count = Field(
        description=f"Number of revenue orders created in {_WINDOW}."
    )
    average_order_value: Money | None = Field(
        description="total / orders, rounded half away from zero to 2 decimal places; null when "
        "there are no orders or several currencies."
    )
    by_month: list[MonthRevenue] = Field(
        description="Revenue per calendar month (UTC) and currency, oldest month first, then by "
        "currency. Months without revenue orders are omitted."
    )
    by_currency: list[CurrencyRevenue] = Field(
        description="Exact figures per currency, ordered by currency code."
    )


class TierCustomers(_Model):
    """One customer tier."""

    tier: str = Field(description="Tier name as stored in customers.tier.")
    customers: Count = Field(description="Customers in this tier.")
    revenue: Money | None = Field(
        description=f"All-time revenue of this tier's customers. {_MONEY}{_MIXED}"
    )


class Customers(_Model):
    """The customers section."""

    total: Count = Field(description="Number of customers.")
    by_tier: list[TierCustomers] = Field(
        description="One entry per tier present in the customers table, ordered by tier name "
        "(byte order)."
    )


class CampaignSpend(_Model):
    """One campaign."""

    campaign_id: str = Field(description=_CAMPAIGN_ID)
    campaign_name: str | None = Field(description=_CAMPAIGN_NAME)
    spend: Money = Field(description=f"All-time spend. {_MONEY}")
    spend_last_30_days: Money = Field(description=f"Spend on the days of {_WINDOW}.")
    impressions: Count = Field(description="All-time impressions.")
    clicks: Count = Field(description="All-time clicks.")
    leads: Count = Field(description="Leads Meta reports for the campaign's ads.")
    cost_per_lead: Money | None = Field(
        description="spend / leads, rounded to 2 places; null when leads is 0."
    )


class SpendOnDay(_Model):
    """One day of ad spend."""

    date: Day = Field(description="Day of the insights (the ad account's day, as Meta reports).")
    spend: Money = Field(description=f"Spend that day. {_MONEY}")
    leads: Count = Field(description="Leads Meta reports for that day's ads.")


class AdSpend(_Model):
    """The ad spend section."""

    total: Money = Field(description=f"All-time spend. {_MONEY}")
    last_30_days: Money = Field(description=f"Spend on the days of {_WINDOW}.")
    impressions: Count = Field(description="All-time impressions.")
    clicks: Count = Field(description="All-time clicks.")
    first_date: Day | None = Field(description="Earliest day with insights; null if none.")
    last_date: Day | None = Field(description="Latest day with insights; null if none.")
    by_campaign: list[CampaignSpend] = Field(
        description="All-time figures per campaign, highest spend first, then by campaign id."
    )
    by_day: list[SpendOnDay] = Field(
        description=f"Spend and Meta-reported leads per day over {_WINDOW}: always 30 entries, "
        "oldest first, days without insights included with 0."
    )


class LeadsOnDay(_Model):
    """One day."""

    date: Day = Field(description="UTC day.")
    leads: Count = Field(description="Leads created that day.")


class SourceLeads(_Model):
    """One source."""

    source: LeadSource = Field(description="Lead source.")
    leads: Count = Field(description="All-time leads from this source.")
    last_30_days: Count = Field(description=f"Leads from this source created in {_WINDOW}.")


class MetaReportedLeads(_Model):
    """Leads Meta attributes to ad spend."""

    total: Count = Field(description="All-time Meta-reported leads.")
    last_30_days: Count = Field(description=f"Meta-reported leads on the days of {_WINDOW}.")


class CostPerLead(_Model):
    """Ad spend per Meta-reported lead."""

    total: Money | None = Field(description="All-time cost per lead.")
    last_30_days: Money | None = Field(description=f"Cost per lead over {_WINDOW}.")


class Leads(_Model):
    """The leads section."""

    total: Count = Field(description="All leads in the CRM.")
    last_30_days: Count = Field(description=f"Leads created in {_WINDOW}.")
    by_day: list[LeadsOnDay] = Field(
        description=f"Leads per UTC day over {_WINDOW}: always 30 entries, oldest first, days "
        "without leads included with 0."
    )
    by_source: list[SourceLeads] = Field(
        description="Leads per source, always both sources, ordered by source name. "
        "'facebook_lead_ads': the lead came from a Lead Ads form (leads.form_id is set); "
        "'other': every other lead (form_id null: API, imports, manual entry)."
    )
    meta_reported: MetaReportedLeads = Field(
        description="Leads Meta attributes to ad spend (ad_insights_daily.leads, from the "
        "insights' lead actions). This is the denominator of cost_per_lead, since only these "
        "leads are attributable to spend."
    )
    cost_per_lead: CostPerLead = Field(
        description="Ad spend / Meta-reported leads over the same days, rounded half away from "
        "zero to 2 places; null when there are no Meta-reported leads."
    )


class CampaignRoas(_Model):
    """One campaign."""

    campaign_id: str = Field(description=_CAMPAIGN_ID)
    campaign_name: str | None = Field(description=_CAMPAIGN_NAME)
    attributed_customers: Count = Field(description="Customers attributed to the campaign.")
    attributed_orders: Count = Field(description="Their revenue orders counted.")
    attributed_revenue: Money | None = Field(
        description=f"Revenue of those orders. {_MONEY}{_MIXED}"
    )
    spend: Money = Field(description="All-time spend of the campaign (0 if none).")
    roas: Money | None = Field(description="attributed_revenue / spend, or null (see above).")
    meta_purchases: Count = Field(description=_META_PURCHASES.format(what="the campaign's ads"))
    meta_purchase_value: Money = Field(description=_META_VALUE.format(what="the campaign's ads"))
    meta_roas: Money | None = Field(description=_META_ROAS)


class Roas(_Model):
    """The return-on-ad-spend section."""

    attributed_customers: Count = Field(description="Customers attributed to any campaign.")
    attributed_revenue: Money | None = Field(
        description=f"Revenue attributed to all campaigns. {_MONEY}{_MIXED}"
    )
    spend: Money = Field(description="All-time ad spend of all campaigns (= ad_spend.total).")
    roas: Money | None = Field(
        description="Blended ROAS: attributed_revenue / spend; null when no customer is "
        "attributed, spend is 0, or several currencies."
    )
    meta_purchases: Count = Field(description=_META_PURCHASES.format(what="all ads"))
    meta_purchase_value: Money = Field(description=_META_VALUE.format(what="all ads"))
    meta_roas: Money | None = Field(description=f"Blended {_META_ROAS}")
    by_campaign: list[CampaignRoas] = Field(
        description="Every campaign with spend or attributed customers, ordered by campaign id "
        "(byte order)."
    )


class Freshness(_Model):
    """The freshness section."""

    ad_insights_synced_at: Timestamp | None = Field(
        description="Newest ad_insights_daily.synced_at."
    )
    leads_created_time: Timestamp | None = Field(description="Newest leads.created_time.")
    orders_created_at: Timestamp | None = Field(description="Newest orders.created_at.")
    change_log_changed_at: Timestamp | None = Field(
        description="Newest change_log.changed_at (any DB write)."
    )


class Summary(_Model):
    """The KPIs of summary.json: the payload `kpis.compute_summary` builds."""

    as_of: Day = Field(
        description="UTC day the KPIs were computed for; the last day of the window."
    )
    window_30_days: Window = Field(
        description="The 30 UTC days every `last_30_days` figure covers, both ends included."
    )
    revenue: Revenue = Field(
        description="Revenue from orders whose status is one of `statuses`. Amounts are in the "
        "orders' currency; refunded or cancelled orders never count."
    )
    customers: Customers = Field(description="Customers in the CRM, by tier.")
    ad_spend: AdSpend = Field(
        description="Meta ad spend from ad_insights_daily (one row per ad and day), in the ad "
        "accounts' currency."
    )
    leads: Leads = Field(
        description="Leads in the CRM's leads table, and cost per lead from Meta's own lead counts."
    )
    roas: Roas = Field(
        description="Return on ad spend, where attributable. Attribution is first touch: a "
        "customer is attributed to the campaign of their earliest lead (by created_time, then "
        "lead id) that names a campaign, via leads.campaign_id or else the lead's ad "
        "(ads.campaign_id). The campaign's attributed revenue is the revenue of its attributed "
        "customers' revenue orders created at or after that lead (all of them if the lead has "
        "no created_time). ROAS = attributed revenue / all-time spend of the campaign, rounded "
        "half away from zero to 4 places. It is null when not attributable: the campaign has "
        "no attributed customers, has no spend, or revenue orders use more than one currency. "
        "Spend is assumed to be in the orders' currency. Beside it, Meta's own view: "
        "meta_purchases, meta_purchase_value and meta_roas (Meta-reported purchase value / "
        "spend), as Meta attributes purchases to the ads."
    )
    freshness: Freshness = Field(
        description="How recent the data behind this file is: the newest timestamp in each "
        "source, as ISO 8601 in UTC, null when the table is empty."
    )


class _Envelope(_Model):
    # The fields `cachefile.envelope` puts on every cache file, first in the schema.
    generated_at: Timestamp = Field(description="When the file was written (UTC).")
    watermark: str = Field(
        description="Change-log watermark (a PostgreSQL xid8, as a decimal string): every DB "
        "change with a lower transaction id is reflected in this file.",
        pattern=r"^\d+$",
    )
    # A literal: a file of another version fails validation rather than being misread.
    schema_version: Literal[SUMMARY_SCHEMA_VERSION] = Field(
        description="Version of this schema; bumped on any incompatible change."
    )


class SummaryFile(Summary, _Envelope):
    """summary.json as written: the envelope, then the KPIs."""

    model_config = ConfigDict(
        title="crm-pipeline analytics summary",
        # What analysts read first, in place of the docstring.
        json_schema_extra={
            "description": "cache/analytics/summary.json: KPIs computed in SQL from one "
            "consistent snapshot of the source-of-truth database. Lists are always in a "
            "deterministic order."
        },
    )
