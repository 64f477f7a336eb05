"""The KPIs of summary.json: the aggregated rows of `kpi_queries.py` shaped into the typed
sections of `summary_model.py` (whose field descriptions say what each figure means).

Python only shapes those rows and does arithmetic on two or three totals; the rows' column names
are the models' field names, so most rows become models as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection, Row, text

from crm_pipeline.cache import kpi_queries as sql
from crm_pipeline.cache.summary_model import (
    AdSpend,
    CampaignRoas,
    CampaignSpend,
    CostPerLead,
    CurrencyRevenue,
    Customers,
    Freshness,
    Leads,
    LeadsOnDay,
    MetaReportedLeads,
    MonthRevenue,
    Revenue,
    Roas,
    SourceLeads,
    SpendOnDay,
    Summary,
    TierCustomers,
    Window,
)

# Orders that count as revenue.
REVENUE_STATUSES = ("paid", "completed", "shipped")
WINDOW_DAYS = 30

_Model = TypeVar("_Model", bound=BaseModel)
_Rows = Sequence[Row[Any]]


def compute_summary(conn: Connection, today: dt.date) -> dict[str, Any]:
    """The KPIs of summary.json as of `conn`'s snapshot, as the payload written to disk (the
    `Summary` model, dumped); `today` is the last day (UTC) of the 30-day window."""
    return build_summary(conn, today).model_dump()


def build_summary(conn: Connection, today: dt.date) -> Summary:
    """The KPIs of summary.json as of `conn`'s snapshot, typed; `today` is the last day (UTC)
    of the 30-day window."""
    first_day = today - dt.timedelta(days=WINDOW_DAYS - 1)
    params = {
        "statuses": list(REVENUE_STATUSES),
        "first_day": first_day,
        "last_day": today,
        "start": dt.datetime.combine(first_day, dt.time(), dt.UTC),
        "end": dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC),
    }

    def rows(query: str) -> _Rows:
        return conn.execute(text(query), params).all()

    currencies = rows(sql.REVENUE_BY_CURRENCY)
    # Amounts in different currencies never add up: with more than one, the cross-currency
    # figures are null and by_currency / by_month carry the exact per-currency numbers.
    single = len(currencies) <= 1
    (spend,) = rows(sql.AD_SPEND)
    (leads,) = rows(sql.LEADS)
    (freshness,) = rows(sql.FRESHNESS)
    return Summary(
        as_of=today,
        window_30_days=Window(first_day=first_day, last_day=today),
        revenue=_revenue(currencies, rows(sql.REVENUE_BY_MONTH)),
        customers=_customers(rows(sql.BY_TIER), single),
        ad_spend=_ad_spend(spend, rows(sql.SPEND_BY_CAMPAIGN), rows(sql.SPEND_BY_DAY)),
        leads=_leads(leads, rows(sql.LEADS_BY_DAY), spend),
        roas=_roas(rows(sql.ROAS_BY_CAMPAIGN), spend, single),
        freshness=Freshness.model_validate(freshness._mapping),
    )


def _each(model: type[_Model], rows: _Rows, **override: Any) -> list[_Model]:
    """One `model` per row, its fields the row's columns (with `override` on top)."""
    return [model.model_validate({**row._mapping, **override}) for row in rows]


def _ratio(numerator: Decimal, denominator: Decimal, places: int) -> Decimal:
    # Same rounding as PostgreSQL's round(numeric): half away from zero.
    return (numerator / denominator).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _revenue(currencies: _Rows, months: _Rows) -> Revenue:
    single = len(currencies) <= 1
    only = currencies[0] if len(currencies) == 1 else None
    zero = Decimal(0)
    return Revenue(
        statuses=sorted(REVENUE_STATUSES),
        currency=only.currency if only else None,
        total=(only.total if only else zero) if single else None,
        last_30_days=(only.last_30_days if only else zero) if single else None,
        orders=sum(r.orders for r in currencies),
        orders_last_30_days=sum(r.orders_last_30_days for r in currencies),
        average_order_value=only.average_order_value if only else None,
        by_month=_each(MonthRevenue, months),
        by_currency=_each(CurrencyRevenue, currencies),
    )


def _customers(tiers: _Rows, single: bool) -> Customers:
    return Customers(
        total=sum(t.customers for t in tiers),
        by_tier=_each(TierCustomers, tiers, **({} if single else {"revenue": None})),
    )


def _ad_spend(spend: Row[Any], campaigns: _Rows, days: _Rows) -> AdSpend:
    return AdSpend(
        total=spend.total,
        last_30_days=spend.last_30_days,
        impressions=spend.impressions,
        clicks=spend.clicks,
        first_date=spend.first_date,
        last_date=spend.last_date,
        by_campaign=_each(CampaignSpend, campaigns),
        by_day=_each(SpendOnDay, days),
    )


def _leads(counts: Row[Any], by_day: _Rows, spend: Row[Any]) -> Leads:
    lead_ads, lead_ads_30 = counts.lead_ads, counts.lead_ads_last_30_days
    other, other_30 = counts.total - lead_ads, counts.last_30_days - lead_ads_30
    return Leads(
        total=counts.total,
        last_30_days=counts.last_30_days,
        by_day=_each(LeadsOnDay, by_day),
        by_source=[
            SourceLeads(source="facebook_lead_ads", leads=lead_ads, last_30_days=lead_ads_30),
            SourceLeads(source="other", leads=other, last_30_days=other_30),
        ],
        meta_reported=MetaReportedLeads(total=spend.leads, last_30_days=spend.leads_last_30_days),
        cost_per_lead=CostPerLead(
            total=_ratio(spend.total, spend.leads, 2) if spend.leads else None,
            last_30_days=_ratio(spend.last_30_days, spend.leads_last_30_days, 2)
            if spend.leads_last_30_days
            else None,
        ),
    )


def _roas(campaigns: _Rows, totals: Row[Any], single: bool) -> Roas:
    customers = sum(c.attributed_customers for c in campaigns)
    revenue = sum((c.attributed_revenue for c in campaigns), start=Decimal(0))
    spend = totals.total
    # Only the order-based figures depend on the orders' currencies; Meta's purchase value is
    # in the ad accounts' currency, like spend.
    hidden = {} if single else {"attributed_revenue": None, "roas": None}
    return Roas(
        attributed_customers=customers,
        attributed_revenue=revenue if single else None,
        spend=spend,
        roas=_ratio(revenue, spend, 4) if single and customers and spend > 0 else None,
        meta_purchases=totals.purchases,
        meta_purchase_value=totals.purchase_value,
        meta_roas=_ratio(totals.purchase_value, spend, 4) if spend > 0 else None,
        by_campaign=_each(CampaignRoas, campaigns, **hidden),
    )
