"""KPI rollups: what each rollup table must hold, recomputed from the source tables.

The rollup tables (`schema.py`, migration 0008) are kept current by statement-level triggers
on customers, orders, leads, ads and ad_insights_daily, in the writer's own transaction, so
summary.json reads a few thousand rollup rows instead of every order, lead and insight row.
This module is the definition the triggers are held to:

- `ROLLUPS`: each rollup's rows as one query over the source tables;
- `rebuild_rollups`: replace the stored rows with that query's (migration 0008 fills the
  tables with it; run it again after writes that bypassed the triggers, e.g. a load under
  `session_replication_role = replica`);
- `find_drift`: stored rows against the recomputation in one snapshot, naming the rollup and
  keys that differ (the `rollups_match_sources` asset check on analytics_summary).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

# Each customer's first touch: their earliest lead (by created_time, then lead id in byte
# order) that names a campaign, directly or through its ad; the same rule as summary.json's
# roas section.
FIRST_TOUCH = """
SELECT DISTINCT ON (l.customer_id)
       l.customer_id, coalesce(l.campaign_id, a.campaign_id) AS campaign_id,
       l.created_time AS touched_at
FROM leads l LEFT JOIN ads a ON a.id = l.ad_id
WHERE l.customer_id IS NOT NULL AND coalesce(l.campaign_id, a.campaign_id) IS NOT NULL
ORDER BY l.customer_id, l.created_time NULLS LAST, l.id COLLATE "C"
"""
LEAD_SOURCE = "CASE WHEN form_id IS NOT NULL THEN 'facebook_lead_ads' ELSE 'other' END"
# The tables the rollups are computed from: writers to them wait while a rebuild runs.
SOURCES = ("customers", "orders", "leads", "ads", "ad_insights_daily")


@dataclass(frozen=True)
class Rollup:
    """One rollup table: its key and value columns, and its rows recomputed from the sources."""

    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    recompute: str
    # Which stored rows the recomputation accounts for (the ad-campaign map also keeps rows for
    # ads that leads name but `ads` lacks, with no campaign: locks, not data).
    stored_filter: str = "true"
    # Additive, with a transaction's deltas in rows of its own until its commit folds them
    # into the totals (`pending_txid` 0): only totals are visible to other transactions.
    pending: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """Key columns, then value columns."""
        return self.keys + self.values

    def stored(self) -> str:
        """The stored rows, one per key (a pending rollup's rows summed per key)."""
        if not self.pending:
            return f"SELECT {', '.join(self.columns)} FROM {self.table} WHERE {self.stored_filter}"
        sums = ", ".join(
            f"sum({v})::{'bigint' if v in _COUNTS else 'numeric'}" for v in self.values
        )
        return (
            f"SELECT {', '.join(self.keys)}, {sums} FROM {self.table}"
            f" GROUP BY {', '.join(self.keys)} HAVING sum({self.values[0]}) <> 0"
        )


_ORDER_SUMS = ("orders", "revenue")
_INSIGHT_SUMS = ("rows", "spend", "impressions", "clicks", "leads", "purchases", "purchase_value",
                 "synced_at")  # fmt: skip
_INSIGHT_RECOMPUTE = (
    "count(*), sum(spend), sum(impressions), sum(clicks), sum(leads), sum(purchases),"
    " sum(purchase_value), max(synced_at)"
)
_COUNTS = {"orders", "customers", "leads"}
ROLLUPS: tuple[Rollup, ...] = (
    Rollup(
        "rollup_orders_daily",
        ("day", "currency", "status"),
        _ORDER_SUMS,
        "SELECT (created_at AT TIME ZONE 'UTC')::date, currency, status, count(*), sum(amount)"
        " FROM orders GROUP BY 1, 2, 3",
        pending=True,
    ),
    Rollup(
        "rollup_customers_by_tier",
        ("tier",),
        ("customers",),
        "SELECT tier, count(*) FROM customers GROUP BY tier",
        pending=True,
    ),
    Rollup(
        "rollup_tier_revenue",
        ("tier", "currency", "status"),
        _ORDER_SUMS,
        "SELECT c.tier, o.currency, o.status, count(*), sum(o.amount)"
        " FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2, 3",
        pending=True,
    ),
    Rollup(
        "rollup_ad_insights_daily",
        ("date", "campaign_id"),
        _INSIGHT_SUMS,
        f"SELECT date, campaign_id, {_INSIGHT_RECOMPUTE} FROM ad_insights_daily GROUP BY 1, 2",
    ),
    Rollup(
        "rollup_ad_insights_by_campaign",
        ("campaign_id",),
        _INSIGHT_SUMS,
        f"SELECT campaign_id, {_INSIGHT_RECOMPUTE} FROM ad_insights_daily GROUP BY 1",
    ),
    Rollup(
        "rollup_leads_daily",
        ("day", "source"),
        ("leads",),
        f"SELECT (created_time AT TIME ZONE 'UTC')::date, {LEAD_SOURCE}, count(*)"
        " FROM leads WHERE created_time IS NOT NULL GROUP BY 1, 2",
        pending=True,
    ),
    Rollup(
        "rollup_leads_by_source",
        ("source",),
        ("leads",),
        f"SELECT {LEAD_SOURCE}, count(*) FROM leads GROUP BY 1",
        pending=True,
    ),
    Rollup(
        "rollup_customer_keys",
        ("customer_id",),
        ("tier", "campaign_id", "touched_at"),
        "SELECT c.id, c.tier, f.campaign_id, f.touched_at"
        f" FROM customers c LEFT JOIN ({FIRST_TOUCH}) f ON f.customer_id = c.id",
    ),
    Rollup(
        "rollup_ad_campaigns",
        ("ad_id",),
        ("campaign_id",),
        "SELECT id, campaign_id FROM ads",
        stored_filter="campaign_id IS NOT NULL",
    ),
    Rollup(
        "rollup_attributed_customers",
        ("campaign_id",),
        ("customers",),
        f"SELECT campaign_id, count(*) FROM ({FIRST_TOUCH}) f GROUP BY 1",
        pending=True,
    ),
    Rollup(
        "rollup_attributed_revenue",
        ("campaign_id", "currency", "status"),
        _ORDER_SUMS,
        "SELECT f.campaign_id, o.currency, o.status, count(*), sum(o.amount)"
        f" FROM ({FIRST_TOUCH}) f JOIN orders o ON o.customer_id = f.customer_id"
        " AND (f.touched_at IS NULL OR o.created_at >= f.touched_at) GROUP BY 1, 2, 3",
        pending=True,
    ),
)
BY_TABLE = {rollup.table: rollup for rollup in ROLLUPS}


def _selected(tables: Iterable[str] | None) -> list[Rollup]:
    if tables is None:
        return list(ROLLUPS)
    unknown = sorted(set(tables) - BY_TABLE.keys())
    if unknown:
        raise ValueError(f"not a rollup table: {', '.join(unknown)}")
    return [BY_TABLE[name] for name in tables]


def rebuild_rollups(conn: Connection, tables: Iterable[str] | None = None) -> dict[str, int]:
    """Replace the rows of every rollup (or of `tables`) with their recomputation from the
    source tables, in `conn`'s transaction; return each rollup's row count.

    The source tables are locked in SHARE mode first: writers wait until the transaction ends
    (readers do not), so no trigger adds a delta to a table being rebuilt. That needs READ
    COMMITTED, where each statement after the lock sees every write that finished before it.
    """
    isolation = conn.execute(text("SHOW transaction_isolation")).scalar_one()
    if isolation != "read committed":
        raise ValueError(f"rebuild_rollups needs a READ COMMITTED transaction, not {isolation}")
    conn.execute(text(f"LOCK TABLE {', '.join(SOURCES)} IN SHARE MODE"))
    counts = {}
    for rollup in _selected(tables):
        conn.execute(text(f"DELETE FROM {rollup.table}"))
        columns = ", ".join(rollup.columns)
        if rollup.pending:  # as totals
            columns = f"pending_txid, {columns}"
            rows = f"SELECT '0', * FROM ({rollup.recompute}) AS x"
        else:
            rows = rollup.recompute
        counts[rollup.table] = conn.execute(
            text(f"INSERT INTO {rollup.table} ({columns}) {rows}")
        ).rowcount
    return counts


@dataclass(frozen=True)
class Drift:
    """One key whose stored rollup row differs from the recomputation (None: no such row)."""

    rollup: str
    key: dict[str, Any]
    stored: dict[str, Any] | None
    recomputed: dict[str, Any] | None

    def describe(self) -> str:
        """One line naming the rollup, the key and both sides."""

        def shown(values: dict[str, Any] | None) -> str:
            return "no row" if values is None else " ".join(f"{k}={v}" for k, v in values.items())

        key = " ".join(f"{k}={v}" for k, v in self.key.items())
        return (
            f"{self.rollup} [{key}]: stored {shown(self.stored)}; "
            f"recomputed {shown(self.recomputed)}"
        )


@dataclass
class DriftReport:
    """The comparison of every rollup: stored row counts, differing keys, a sample of them."""

    stored_rows: dict[str, int] = field(default_factory=dict)
    differing: dict[str, int] = field(default_factory=dict)
    samples: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every rollup equals its recomputation."""
        return not any(self.differing.values())


def _diff_sql(rollup: Rollup) -> str:
    """Keys where stored and recomputed rows differ (either side may be missing), with both
    sides' values and the number of such keys."""
    keys = ", ".join(rollup.keys)
    cols = ", ".join(rollup.columns)

    def side(alias: str) -> str:  # whether the row exists, then its values
        return ", ".join([f"{alias}.present"] + [f"{alias}.{v}" for v in rollup.values])

    shown = ", ".join(f"s.{v} AS s_{v}, e.{v} AS e_{v}" for v in rollup.values)
    return (
        f"SELECT {keys}, s.present AS s_present, e.present AS e_present, {shown},"
        f" count(*) OVER () AS differing"
        f" FROM (SELECT *, true AS present FROM ({rollup.recompute}) AS x ({cols})) e"
        f" FULL JOIN (SELECT *, true AS present FROM ({rollup.stored()}) AS y ({cols})) s"
        f" USING ({keys})"
        f" WHERE ({side('e')}) IS DISTINCT FROM ({side('s')})"
        f" ORDER BY {keys} LIMIT :sample"
    )


def find_drift(conn: Connection, sample: int = 20) -> DriftReport:
    """Compare every rollup with its recomputation from the source tables.

    Run it in one snapshot (`db.engine.read_snapshot`): the triggers update rollups in the
    writer's transaction, so within a snapshot stored and recomputed rows are exactly equal.
    At most `sample` differing keys are kept per rollup; `differing` counts them all.
    """
    report = DriftReport()
    for rollup in ROLLUPS:
        report.stored_rows[rollup.table] = conn.execute(
            text(f"SELECT count(*) FROM ({rollup.stored()}) AS stored")
        ).scalar_one()
        rows = conn.execute(text(_diff_sql(rollup)), {"sample": sample}).mappings().all()
        report.differing[rollup.table] = rows[0]["differing"] if rows else 0
        for row in rows:
            side = {p: {v: row[f"{p}_{v}"] for v in rollup.values} for p in ("s", "e")}
            report.samples.append(
                Drift(
                    rollup=rollup.table,
                    key={k: row[k] for k in rollup.keys},
                    stored=side["s"] if row["s_present"] else None,
                    recomputed=side["e"] if row["e_present"] else None,
                )
            )
    return report
