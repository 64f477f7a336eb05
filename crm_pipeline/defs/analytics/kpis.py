"""KPI queries for summary.json. Aggregation happens in PostgreSQL, never row by row in Python."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, text

# Orders that count as revenue.
REVENUE_STATUSES = ("paid", "completed", "shipped")

_AD_SPEND = """
SELECT coalesce(sum(spend), 0) AS total,
       coalesce(sum(spend) FILTER (WHERE date >= :since_30d), 0) AS last_30_days,
       min(date) AS first_date, max(date) AS last_date
FROM ad_insights_daily
"""
_REVENUE = """
SELECT currency, coalesce(sum(amount), 0) AS total, count(*) AS orders,
       coalesce(sum(amount) FILTER (WHERE created_at >= :since_30d), 0) AS last_30_days
FROM orders WHERE status = ANY(:statuses)
GROUP BY currency ORDER BY currency
"""
_BY_TIER = """
SELECT c.tier, count(*) AS customers, coalesce(sum(o.revenue), 0) AS revenue
FROM customers c
LEFT JOIN (
    SELECT customer_id, sum(amount) AS revenue FROM orders
    WHERE status = ANY(:statuses) GROUP BY customer_id
) o ON o.customer_id = c.id
GROUP BY c.tier ORDER BY c.tier
"""


def compute_summary(conn: Connection, today: dt.date) -> dict:
    """Revenue, customers by tier and ad spend, as of `conn`'s snapshot."""
    params = {"since_30d": today - dt.timedelta(days=29), "statuses": list(REVENUE_STATUSES)}
    spend = conn.execute(text(_AD_SPEND), params).one()
    revenue = conn.execute(text(_REVENUE), params).all()
    tiers = conn.execute(text(_BY_TIER), params).all()
    orders = sum(r.orders for r in revenue)
    total = sum((r.total for r in revenue), start=0)
    return {
        "as_of": today.isoformat(),
        "revenue": {
            # Totals across currencies only make sense with one currency; by_currency is exact.
            "total": total if len(revenue) <= 1 else None,
            "orders": orders,
            "average_order_value": round(total / orders, 2)
            if orders and len(revenue) <= 1
            else None,
            "last_30_days": revenue[0].last_30_days if len(revenue) == 1 else None,
            "by_currency": [r._asdict() for r in revenue],
        },
        "customers": {
            "total": sum(t.customers for t in tiers),
            "by_tier": [t._asdict() for t in tiers],
        },
        "ad_spend": {
            "total": spend.total,
            "last_30_days": spend.last_30_days,
            "first_date": spend.first_date.isoformat() if spend.first_date else None,
            "last_date": spend.last_date.isoformat() if spend.last_date else None,
        },
    }
