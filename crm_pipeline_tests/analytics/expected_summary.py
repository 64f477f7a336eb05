"""Every KPI of summary.json computed independently: from `SELECT *` of each table, one row at a
time, in plain Python, with none of the SQL in `kpi_queries.py`. A wrong filter, join, window
bound or ordering in a query then shows up as a mismatch."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Engine, text

from crm_pipeline.cache.kpis import REVENUE_STATUSES

UTC = dt.UTC
ZERO = Decimal(0)


@dataclass(frozen=True)
class _Tables:
    customers: list[dict]
    orders: list[dict]
    leads: list[dict]
    insights: list[dict]
    campaigns: dict  # id -> name
    ads: dict  # id -> campaign_id
    changes: list[dict]

    @property
    def paid(self) -> list[dict]:
        return [o for o in self.orders if o["status"] in REVENUE_STATUSES]


@dataclass(frozen=True)
class _Window:
    first: dt.date
    today: dt.date

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), UTC)

    def recent(self, ts: dt.datetime | None) -> bool:
        end = dt.datetime.combine(self.today + dt.timedelta(days=1), dt.time(), UTC)
        return ts is not None and self.start <= ts < end

    def has_day(self, day: dt.date) -> bool:
        return self.first <= day <= self.today


def _q(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _rows(conn, name: str) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {name}"))]


def expected_summary(engine: Engine, today: dt.date) -> dict:
    """Every KPI from the raw rows, in plain Python."""
    with engine.connect() as conn:
        tables = _Tables(
            customers=_rows(conn, "customers"),
            orders=_rows(conn, "orders"),
            leads=_rows(conn, "leads"),
            insights=_rows(conn, "ad_insights_daily"),
            campaigns={r["id"]: r["name"] for r in _rows(conn, "campaigns")},
            ads={r["id"]: r["campaign_id"] for r in _rows(conn, "ads")},
            changes=_rows(conn, "change_log"),
        )
    window = _Window(first=today - dt.timedelta(days=29), today=today)
    revenue = _revenue(tables, window)
    single = len(revenue["by_currency"]) <= 1
    return {
        "as_of": today.isoformat(),
        "window_30_days": {"first_day": window.first.isoformat(), "last_day": today.isoformat()},
        "revenue": revenue,
        "customers": _customers(tables, single),
        "ad_spend": _ad_spend(tables, window),
        "leads": _leads(tables, window),
        "roas": _roas(tables, window, single),
        "freshness": {
            "ad_insights_synced_at": _newest(tables.insights, "synced_at"),
            "leads_created_time": _newest(tables.leads, "created_time"),
            "orders_created_at": _newest(tables.orders, "created_at"),
            "change_log_changed_at": _newest(tables.changes, "changed_at"),
        },
    }


def _newest(rows: list[dict], field: str) -> str | None:
    values = [r[field] for r in rows if r[field] is not None]
    return max(values).astimezone(UTC).isoformat() if values else None


def _revenue(tables: _Tables, window: _Window) -> dict:
    paid, recent = tables.paid, window.recent
    by_cur = defaultdict(list)
    for o in paid:
        by_cur[o["currency"]].append(o)
    by_currency = [
        {
            "currency": cur,
            "total": sum(o["amount"] for o in rows),
            "orders": len(rows),
            "last_30_days": sum((o["amount"] for o in rows if recent(o["created_at"])), ZERO),
            "orders_last_30_days": sum(recent(o["created_at"]) for o in rows),
            "average_order_value": _q(sum(o["amount"] for o in rows) / len(rows), 2),
        }
        for cur, rows in sorted(by_cur.items())
    ]
    single = len(by_currency) <= 1
    only = by_currency[0] if len(by_currency) == 1 else None
    months = defaultdict(lambda: [ZERO, 0])
    for o in paid:
        key = (o["created_at"].astimezone(UTC).strftime("%Y-%m"), o["currency"])
        months[key][0] += o["amount"]
        months[key][1] += 1
    return {
        "statuses": sorted(REVENUE_STATUSES),
        "currency": only["currency"] if only else None,
        "total": (only["total"] if only else 0) if single else None,
        "last_30_days": (only["last_30_days"] if only else 0) if single else None,
        "orders": len(paid),
        "orders_last_30_days": sum(recent(o["created_at"]) for o in paid),
        "average_order_value": only["average_order_value"] if only else None,
        "by_month": [
            {"month": m, "currency": cur, "revenue": v[0], "orders": v[1]}
            for (m, cur), v in sorted(months.items())
        ],
        "by_currency": by_currency,
    }


def _customers(tables: _Tables, single: bool) -> dict:
    tier_of = {c["id"]: c["tier"] for c in tables.customers}
    tiers = defaultdict(lambda: [0, ZERO])
    for c in tables.customers:
        tiers[c["tier"]][0] += 1
    for o in tables.paid:
        tiers[tier_of[o["customer_id"]]][1] += o["amount"]
    return {
        "total": len(tables.customers),
        "by_tier": [
            {"tier": t, "customers": v[0], "revenue": v[1] if single else None}
            for t, v in sorted(tiers.items())
        ],
    }


def _campaign_totals(tables: _Tables, window: _Window) -> dict:
    by_campaign = defaultdict(lambda: defaultdict(Decimal))
    for r in tables.insights:
        row = by_campaign[r["campaign_id"]]
        for field in ("spend", "impressions", "clicks", "leads", "purchases", "purchase_value"):
            row[field] += r[field]
        row["spend_last_30_days"] += r["spend"] if window.has_day(r["date"]) else 0
    return by_campaign


def _ad_spend(tables: _Tables, window: _Window) -> dict:
    insights, campaigns = tables.insights, tables.campaigns
    campaign_rows = sorted(
        (
            {
                "campaign_id": cid,
                "campaign_name": campaigns.get(cid),
                "spend": v["spend"],
                "spend_last_30_days": v["spend_last_30_days"],
                "impressions": v["impressions"],
                "clicks": v["clicks"],
                "leads": v["leads"],
                "cost_per_lead": _q(v["spend"] / v["leads"], 2) if v["leads"] else None,
            }
            for cid, v in _campaign_totals(tables, window).items()
        ),
        key=lambda r: (-r["spend"], r["campaign_id"]),
    )
    return {
        "total": sum((r["spend"] for r in insights), ZERO),
        "last_30_days": sum((r["spend"] for r in insights if window.has_day(r["date"])), ZERO),
        "impressions": sum(r["impressions"] for r in insights),
        "clicks": sum(r["clicks"] for r in insights),
        "first_date": min(r["date"] for r in insights).isoformat() if insights else None,
        "last_date": max(r["date"] for r in insights).isoformat() if insights else None,
        "by_campaign": campaign_rows,
        "by_day": [
            {
                "date": day.isoformat(),
                "spend": sum((r["spend"] for r in insights if r["date"] == day), ZERO),
                "leads": sum(r["leads"] for r in insights if r["date"] == day),
            }
            for day in (window.first + dt.timedelta(days=i) for i in range(30))
        ],
    }


def _leads(tables: _Tables, window: _Window) -> dict:
    leads, insights, recent = tables.leads, tables.insights, window.recent
    day_counts = defaultdict(int)
    for lead in leads:
        if recent(lead["created_time"]):
            day_counts[lead["created_time"].astimezone(UTC).date()] += 1
    days = [window.first + dt.timedelta(days=i) for i in range(30)]
    sources = {
        "facebook_lead_ads": [lead for lead in leads if lead["form_id"] is not None],
        "other": [lead for lead in leads if lead["form_id"] is None],
    }
    spend = sum((r["spend"] for r in insights), ZERO)
    spend_30 = sum((r["spend"] for r in insights if window.has_day(r["date"])), ZERO)
    meta_leads = sum(r["leads"] for r in insights)
    meta_leads_30 = sum(r["leads"] for r in insights if window.has_day(r["date"]))
    return {
        "total": len(leads),
        "last_30_days": sum(recent(x["created_time"]) for x in leads),
        "by_day": [{"date": day.isoformat(), "leads": day_counts[day]} for day in days],
        "by_source": [
            {
                "source": source,
                "leads": len(rows),
                "last_30_days": sum(recent(x["created_time"]) for x in rows),
            }
            for source, rows in sources.items()
        ],
        "meta_reported": {"total": meta_leads, "last_30_days": meta_leads_30},
        "cost_per_lead": {
            "total": _q(spend / meta_leads, 2) if meta_leads else None,
            "last_30_days": _q(spend_30 / meta_leads_30, 2) if meta_leads_30 else None,
        },
    }


def _first_touches(tables: _Tables, window: _Window) -> dict:
    """customer id -> (campaign, lead time) of their earliest lead (created_time, nulls last,
    then id) naming a campaign, directly or through its ad."""
    touches = {}
    for lead in sorted(
        tables.leads,
        key=lambda x: (x["created_time"] is None, x["created_time"] or window.start, x["id"]),
    ):
        campaign = lead["campaign_id"] or tables.ads.get(lead["ad_id"])
        if lead["customer_id"] is not None and campaign and lead["customer_id"] not in touches:
            touches[lead["customer_id"]] = (campaign, lead["created_time"])
    return touches


def _roas(tables: _Tables, window: _Window, single: bool) -> dict:
    touches = _first_touches(tables, window)
    attributed = defaultdict(lambda: {"customers": 0, "orders": 0, "revenue": ZERO})
    for customer, (campaign, since) in touches.items():
        attributed[campaign]["customers"] += 1
        for o in tables.paid:
            if o["customer_id"] == customer and (since is None or o["created_at"] >= since):
                attributed[campaign]["orders"] += 1
                attributed[campaign]["revenue"] += o["amount"]
    totals = _campaign_totals(tables, window)
    spend_of = {cid: v["spend"] for cid, v in totals.items()}
    roas_rows = []
    for cid in sorted(set(attributed) | set(spend_of)):
        got, spent = attributed.get(cid), spend_of.get(cid, ZERO)
        meta_value = totals[cid]["purchase_value"] if cid in totals else ZERO
        roas_rows.append(
            {
                "campaign_id": cid,
                "campaign_name": tables.campaigns.get(cid),
                "attributed_customers": got["customers"] if got else 0,
                "attributed_orders": got["orders"] if got else 0,
                "attributed_revenue": (got["revenue"] if got else 0) if single else None,
                "spend": spent,
                "roas": _q(got["revenue"] / spent, 4) if single and got and spent else None,
                "meta_purchases": totals[cid]["purchases"] if cid in totals else 0,
                "meta_purchase_value": meta_value,
                "meta_roas": _q(meta_value / spent, 4) if spent else None,
            }
        )
    attributed_revenue = sum((v["revenue"] for v in attributed.values()), ZERO)
    spend_total = sum((r["spend"] for r in tables.insights), ZERO)
    meta_value_total = sum((r["purchase_value"] for r in tables.insights), ZERO)
    return {
        "attributed_customers": len(touches),
        "attributed_revenue": attributed_revenue if single else None,
        "spend": spend_total,
        "roas": _q(attributed_revenue / spend_total, 4)
        if single and touches and spend_total
        else None,
        "meta_purchases": sum(r["purchases"] for r in tables.insights),
        "meta_purchase_value": meta_value_total,
        "meta_roas": _q(meta_value_total / spend_total, 4) if spend_total else None,
        "by_campaign": roas_rows,
    }
