"""Every rollup table's rows computed in Python from the raw source rows, independently of the
SQL in `db/rollups.py` and of the triggers, and the stored rows read the same way."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.db.rollups import ROLLUPS, find_drift

Rows = dict[tuple, tuple]


def _rows(conn: Connection, query: str) -> list[Any]:
    return conn.execute(text(query)).all()


def _utc_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(dt.UTC).date()


def _source(form_id: str | None) -> str:
    return "other" if form_id is None else "facebook_lead_ads"


def _sums(groups: dict[tuple, list[Decimal]]) -> Rows:
    """(count, sum) per key."""
    return {key: (len(values), sum(values, Decimal(0))) for key, values in groups.items()}


def first_touch(conn: Connection) -> dict[int, tuple[str, dt.datetime | None]]:
    """customer -> (campaign, created_time of the first-touch lead), by summary.json's rule."""
    campaign_of_ad = dict(_rows(conn, "SELECT id, campaign_id FROM ads"))
    best: dict[int, tuple] = {}
    for lead in _rows(conn, "SELECT id, customer_id, created_time, ad_id, campaign_id FROM leads"):
        campaign = lead.campaign_id or campaign_of_ad.get(lead.ad_id)
        if lead.customer_id is None or campaign is None:
            continue
        # created_time NULLS LAST, then the lead id in byte order.
        rank = (lead.created_time is None, lead.created_time or dt.datetime.min, lead.id.encode())
        if lead.customer_id not in best or rank < best[lead.customer_id][0]:
            best[lead.customer_id] = (rank, campaign, lead.created_time)
    return {customer: (campaign, at) for customer, (_, campaign, at) in best.items()}


def _order_rollups(conn: Connection, touch: dict, tier_of: dict[int, str]) -> dict[str, Rows]:
    daily, by_tier, attributed = defaultdict(list), defaultdict(list), defaultdict(list)
    for o in _rows(conn, "SELECT customer_id, amount, currency, status, created_at FROM orders"):
        daily[(_utc_day(o.created_at), o.currency, o.status)].append(o.amount)
        by_tier[(tier_of[o.customer_id], o.currency, o.status)].append(o.amount)
        if o.customer_id in touch:
            campaign, at = touch[o.customer_id]
            if at is None or o.created_at >= at:
                attributed[(campaign, o.currency, o.status)].append(o.amount)
    return {
        "rollup_orders_daily": _sums(daily),
        "rollup_tier_revenue": _sums(by_tier),
        "rollup_attributed_revenue": _sums(attributed),
    }


def _insight_rollup(conn: Connection, *keys: str) -> Rows:
    groups = defaultdict(list)
    for i in _rows(
        conn,
        "SELECT date, campaign_id, spend, impressions, clicks, leads, purchases, purchase_value,"
        " synced_at FROM ad_insights_daily",
    ):
        groups[tuple(getattr(i, k) for k in keys)].append(i)
    sums = ("spend", "impressions", "clicks", "leads", "purchases", "purchase_value")
    return {
        key: (
            len(rows),
            *(sum((getattr(r, c) for r in rows), start=Decimal(0)) for c in sums),
            max(r.synced_at for r in rows),
        )
        for key, rows in groups.items()
    }


def _lead_rollups(conn: Connection) -> dict[str, Rows]:
    daily, by_source = defaultdict(int), defaultdict(int)
    for lead in _rows(conn, "SELECT form_id, created_time FROM leads"):
        by_source[(_source(lead.form_id),)] += 1
        if lead.created_time is not None:
            daily[(_utc_day(lead.created_time), _source(lead.form_id))] += 1
    return {
        "rollup_leads_daily": {k: (n,) for k, n in daily.items()},
        "rollup_leads_by_source": {k: (n,) for k, n in by_source.items()},
    }


def expected_rollups(conn: Connection) -> dict[str, Rows]:
    """Each rollup table's rows (key tuple -> value tuple) from the source rows."""
    tier_of = dict(_rows(conn, "SELECT id, tier FROM customers"))
    ads = _rows(conn, "SELECT id, campaign_id FROM ads")
    touch = first_touch(conn)
    tiers, campaigns = defaultdict(int), defaultdict(int)
    for tier in tier_of.values():
        tiers[(tier,)] += 1
    for campaign, _ in touch.values():
        campaigns[(campaign,)] += 1
    return {
        **_order_rollups(conn, touch, tier_of),
        **_lead_rollups(conn),
        "rollup_customers_by_tier": {k: (n,) for k, n in tiers.items()},
        "rollup_ad_insights_daily": _insight_rollup(conn, "date", "campaign_id"),
        "rollup_ad_insights_by_campaign": _insight_rollup(conn, "campaign_id"),
        "rollup_customer_keys": {
            (c,): (tier, *touch.get(c, (None, None))) for c, tier in tier_of.items()
        },
        "rollup_ad_campaigns": {(a,): (c,) for a, c in ads},
        "rollup_attributed_customers": {k: (n,) for k, n in campaigns.items()},
    }  # fmt: skip


def stored_rollups(conn: Connection) -> dict[str, Rows]:
    """Each rollup table's stored rows, shaped like `expected_rollups`."""
    stored = {}
    for rollup in ROLLUPS:
        rows = _rows(
            conn,
            f"SELECT {', '.join(rollup.columns)} FROM {rollup.table} WHERE {rollup.stored_filter}",
        )
        width = len(rollup.keys)
        stored[rollup.table] = {tuple(r[:width]): tuple(r[width:]) for r in rows}
        assert len(stored[rollup.table]) == len(rows)  # one row per key ...
        if rollup.pending:  # ... a committed total: every transaction's deltas were folded
            folded = f"SELECT count(*) FROM {rollup.table} WHERE pending_txid <> '0'"
            assert _rows(conn, folded)[0][0] == 0, rollup.table
    return stored


def assert_consistent(engine: Engine, step: str = "") -> dict[str, Rows]:
    """Stored rollups equal the Python computation and the drift check finds nothing, in one
    snapshot; return the rollups."""
    with read_snapshot(engine) as conn:
        expected, stored = expected_rollups(conn), stored_rollups(conn)
        drift = find_drift(conn)
    assert set(stored) == set(expected)
    for table, rows in expected.items():
        assert stored[table] == rows, f"{step}: {table}"
    assert drift.ok, f"{step}: " + "; ".join(d.describe() for d in drift.samples)
    return stored
