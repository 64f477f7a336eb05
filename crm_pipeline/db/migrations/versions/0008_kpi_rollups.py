"""KPI rollups for summary.json, kept current by statement-level triggers (docs/architecture.md,
"KPI rollups", says how and why in full).

- Rollup tables (`schema.py` says what each holds; `db/rollups.py` recomputes them), the maps
  the triggers book by and lock on (each customer's keys: tier, first touch; each ad's
  campaign), the settle queue; filled here from the existing rows (`rebuild_rollups`).
- AFTER INSERT / UPDATE / DELETE ... FOR EACH STATEMENT triggers with transition tables on
  customers, orders, leads, ads and ad_insights_daily: each statement's rows netted (an
  UPDATE's old rows -1, new rows +1), summed per key, added with ON CONFLICT DO UPDATE. TRUNCATE
  resets what a table feeds. Hot rollups take a transaction's deltas into its own rows
  (`pending_txid`), folded into the totals by a deferred trigger at commit, which first
  re-keys the customers whose tier or first touch the transaction may have moved.
- Indexes: orders(created_at) for the newest order, leads(ad_id) for an ads write's leads.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from crm_pipeline.db import rollups
from crm_pipeline.db.schema import Xid8

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COUNT, TZ = sa.BigInteger, sa.DateTime(timezone=True)
REVENUE, INSIGHT_MONEY = sa.Numeric(30, 2), sa.Numeric(30, 4)
_ORDER_SUMS = {"currency": sa.Text, "status": sa.Text}, {"orders": COUNT, "revenue": REVENUE}
_INSIGHT_SUMS = {"rows": COUNT, "spend": INSIGHT_MONEY, "impressions": COUNT, "clicks": COUNT,
                 "leads": COUNT, "purchases": COUNT, "purchase_value": INSIGHT_MONEY,
                 "synced_at": TZ}  # fmt: skip
# Table -> (key columns, value columns: the first of a rollup is its count).
TABLES = {
    "rollup_orders_daily": ({"day": sa.Date, **_ORDER_SUMS[0]}, _ORDER_SUMS[1]),
    "rollup_customers_by_tier": ({"tier": sa.Text}, {"customers": COUNT}),
    "rollup_tier_revenue": ({"tier": sa.Text, **_ORDER_SUMS[0]}, _ORDER_SUMS[1]),
    "rollup_ad_insights_daily": ({"date": sa.Date, "campaign_id": sa.Text}, _INSIGHT_SUMS),
    "rollup_ad_insights_by_campaign": ({"campaign_id": sa.Text}, _INSIGHT_SUMS),
    "rollup_leads_daily": ({"day": sa.Date, "source": sa.Text}, {"leads": COUNT}),
    "rollup_leads_by_source": ({"source": sa.Text}, {"leads": COUNT}),
    "rollup_customer_keys": (
        {"customer_id": sa.BigInteger},
        {"tier": sa.Text, "campaign_id": sa.Text, "touched_at": TZ},
    ),
    "rollup_ad_campaigns": ({"ad_id": sa.Text}, {"campaign_id": sa.Text}),
    "rollup_attributed_customers": ({"campaign_id": sa.Text}, {"customers": COUNT}),
    "rollup_attributed_revenue": ({"campaign_id": sa.Text, **_ORDER_SUMS[0]}, _ORDER_SUMS[1]),
}
NULLABLE = {"campaign_id", "touched_at"}  # value columns that may be null
# The rollups with a transaction's deltas in rows of its own, folded at its commit.
PENDING = [t for t in TABLES if not t.startswith("rollup_ad_")
           and t != "rollup_customer_keys"]  # fmt: skip

# Source table -> the columns its rollups read (what a statement's rows are netted on).
SOURCE_COLUMNS = {
    "orders": "customer_id, currency, status, amount, created_at",
    "customers": "id, tier",
    # (id too: the first touch breaks ties between leads by id)
    "leads": "id, customer_id, form_id, created_time, ad_id, campaign_id",
    "ads": "id, campaign_id",
    "ad_insights_daily": (
        "date, campaign_id, spend, impressions, clicks, leads, purchases, purchase_value, synced_at"
    ),
}
EVENTS = {"INSERT": "NEW TABLE AS new_rows", "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
          "DELETE": "OLD TABLE AS old_rows"}  # fmt: skip


def _changes(table: str, event: str) -> str:
    """WITH clause: the statement's rows as `changes(sign, <columns>)`, an UPDATE's netted."""
    cols = SOURCE_COLUMNS[table]
    if event == "INSERT":
        rows = f"SELECT 1 AS sign, {cols} FROM new_rows"
    elif event == "DELETE":
        rows = f"SELECT -1 AS sign, {cols} FROM old_rows"
    else:
        rows = (
            f"SELECT sum(s)::int AS sign, {cols} FROM (SELECT 1 AS s, {cols} FROM new_rows"
            f" UNION ALL SELECT -1, {cols} FROM old_rows) u GROUP BY {cols} HAVING sum(s) <> 0"
        )
    return f"WITH changes AS ({rows})"


def _add(table: str, sums: str) -> str:
    """ON CONFLICT clause adding the statement's sums to the stored ones (a pending rollup's:
    to this transaction's own row, whose pending_txid the column default fills in)."""
    keys = ", ".join((["pending_txid"] if table in PENDING else []) + list(TABLES[table][0]))
    sets = ", ".join(f"{c} = r.{c} + excluded.{c}" for c in sums.split(", "))
    return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def _order_sums(table: str, key: str, source: str, expr: str = "") -> str:
    """Upsert of orders and revenue per (`key`, currency, status) from `source` (rows with
    sign, currency, status, amount; `key` computed as `expr` if given). ORDER BY: locks taken
    in key order, so two multi-key statements cannot deadlock on each other."""
    return (
        f"INSERT INTO {table} AS r ({key}, currency, status, orders, revenue)"
        f" SELECT {expr or key}, currency, status, sum(sign), sum(sign * amount) FROM {source}"
        " GROUP BY 1, 2, 3 HAVING sum(sign) <> 0 OR sum(sign * amount) <> 0 ORDER BY 1, 2, 3 "
        + _add(table, "orders, revenue")
    )


def _counts(table: str, key: str, source: str, where: str = "true") -> str:
    """Upsert of a count per `key` (an expression list) from `source` rows with a sign."""
    keys, values = TABLES[table]
    count, positions = next(iter(values)), ", ".join(str(i + 1) for i in range(len(keys)))
    return (
        f"INSERT INTO {table} AS r ({', '.join(keys)}, {count}) SELECT {key}, sum(sign)"
        f" FROM {source} WHERE {where} GROUP BY {positions}"
        f" HAVING sum(sign) <> 0 ORDER BY {positions} {_add(table, count)}"
    )


def _lock_keys(ids: str, cte: str = "") -> str:
    """Lock (and rewrite: a write is what REPEATABLE READ detects) the keys rows of customers
    `ids`, in id order, in statements of their own (see the module docstring); `cte` is a WITH
    clause `ids` needs. A customer written in the same statement as their orders may not have
    a row yet (the customers trigger may run after this one): it gets one here."""
    return f"""
    {cte} INSERT INTO rollup_customer_keys (customer_id, tier)
    SELECT id, tier FROM customers WHERE id IN ({ids}) ORDER BY id
    ON CONFLICT (customer_id) DO NOTHING;
    {cte} UPDATE rollup_customer_keys k SET tier = k.tier
    FROM (SELECT customer_id FROM rollup_customer_keys WHERE customer_id IN ({ids})
          ORDER BY customer_id FOR UPDATE) l
    WHERE k.customer_id = l.customer_id;
    """


def _rekey_later(ids: str, cte: str = "") -> str:
    """Queue customers `ids` for re-keying at commit (nothing queued when there are none)."""
    return (
        f"{cte} INSERT INTO rollup_rekey_queue (customer_ids)"
        f" SELECT array_agg(DISTINCT customer_id) FROM ({ids}) q (customer_id)"
        " WHERE customer_id IS NOT NULL HAVING count(customer_id) > 0;"
    )


# Follows each upsert of pending rows: whether the statement wrote any.
WROTE = "\n    wrote := wrote OR FOUND;"
# After writing pending rows: make sure the transaction settles at commit (one queue row, so
# one deferred event, per transaction; a setting local to it remembers).
SETTLE_LATER = """
    IF wrote AND current_setting('crm.rollup_settle_queued', true) IS DISTINCT FROM '1' THEN
        INSERT INTO rollup_rekey_queue (customer_ids) VALUES ('{}');
        PERFORM set_config('crm.rollup_settle_queued', '1', true);
    END IF;
"""


def _fold(table: str) -> str:
    """Add this transaction's rows of a pending rollup to the totals, drop totals whose count
    reached 0, delete the transaction's rows."""
    keys, values = TABLES[table]
    key_list, count = ", ".join(keys), next(iter(values))
    same_key = " AND ".join(f"r.{k} = p.{k}" for k in keys)
    return f"""
    INSERT INTO {table} AS r (pending_txid, {key_list}, {", ".join(values)})
    SELECT '0', {key_list}, {", ".join(values)} FROM {table}
    WHERE pending_txid = me AND ({" OR ".join(f"{v} <> 0" for v in values)})
    ORDER BY {key_list} {_add(table, ", ".join(values))};
    DELETE FROM {table} r USING {table} p
    WHERE p.pending_txid = me AND r.pending_txid = '0' AND {same_key} AND r.{count} = 0;
    DELETE FROM {table} WHERE pending_txid = me;
    """


_FRESH_KEYS = """
    SELECT c.id AS customer_id, c.tier, f.campaign_id, f.touched_at
    FROM customers c LEFT JOIN (
        SELECT DISTINCT ON (l.customer_id) l.customer_id,
               coalesce(l.campaign_id, a.campaign_id) AS campaign_id, l.created_time AS touched_at
        FROM leads l LEFT JOIN rollup_ad_campaigns a ON a.ad_id = l.ad_id
        WHERE l.customer_id = ANY(ids) AND coalesce(l.campaign_id, a.campaign_id) IS NOT NULL
        ORDER BY l.customer_id, l.created_time NULLS LAST, l.id COLLATE "C"
    ) f ON f.customer_id = c.id
    WHERE c.id = ANY(ids)
"""
_MOVED_CUSTOMERS = _counts(
    "rollup_attributed_customers", "campaign_id", "(SELECT old_campaign, -1 FROM moved"
    " UNION ALL SELECT new_campaign, 1 FROM moved) c (campaign_id, sign)", "campaign_id IS NOT NULL",
)  # fmt: skip
_MOVED_TIERS = _order_sums(
    "rollup_tier_revenue", "tier", "(SELECT old_tier, currency, status, -1, amount FROM orders_of"
    " UNION ALL SELECT new_tier, currency, status, 1, amount FROM orders_of)"
    " t (tier, currency, status, sign, amount)",
)  # fmt: skip

SETTLE = f"""
-- Re-derive the keys of customers `ids` (tier; first touch: the earliest lead naming a
-- campaign, directly or through its ad) and move what changed: the customer between
-- campaigns, and their orders from the old tier and touch to the new.
CREATE FUNCTION crm_rollup_rekey(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(ids), 0) = 0 THEN
        RETURN;
    END IF;
    -- Take turns with ads writes on the ads their leads take a campaign from (before the keys:
    -- an ads write holds its ads' rows and then re-keys their customers).
    INSERT INTO rollup_ad_campaigns AS r (ad_id)
    SELECT DISTINCT ad_id FROM leads
    WHERE customer_id = ANY(ids) AND campaign_id IS NULL AND ad_id IS NOT NULL ORDER BY 1
    ON CONFLICT (ad_id) DO UPDATE SET campaign_id = r.campaign_id;
    {_lock_keys("SELECT unnest(ids)")}
    WITH fresh AS ({_FRESH_KEYS}), moved AS (
        SELECT k.customer_id, k.tier AS old_tier, k.campaign_id AS old_campaign,
               k.touched_at AS old_touch, f.tier AS new_tier, f.campaign_id AS new_campaign,
               f.touched_at AS new_touch
        FROM rollup_customer_keys k JOIN fresh f USING (customer_id)
        WHERE (k.tier, k.campaign_id, k.touched_at)
              IS DISTINCT FROM (f.tier, f.campaign_id, f.touched_at)
    ), rebooked AS (
        UPDATE rollup_customer_keys k
        SET tier = m.new_tier, campaign_id = m.new_campaign, touched_at = m.new_touch
        FROM moved m WHERE k.customer_id = m.customer_id
    ), counted AS ({_MOVED_CUSTOMERS}
    ), orders_of AS (
        SELECT m.*, o.currency, o.status, o.amount, o.created_at
        FROM moved m JOIN orders o ON o.customer_id = m.customer_id
    ), tiers AS ({_MOVED_TIERS}
    ), attributed AS (
        SELECT old_campaign AS campaign_id, currency, status, -1 AS sign, amount FROM orders_of
        WHERE old_campaign IS NOT NULL AND (old_touch IS NULL OR created_at >= old_touch)
        UNION ALL
        SELECT new_campaign, currency, status, 1, amount FROM orders_of
        WHERE new_campaign IS NOT NULL AND (new_touch IS NULL OR created_at >= new_touch)
    )
    {_order_sums("rollup_attributed_revenue", "campaign_id", "attributed")};
END
$$;

-- At commit (a deferred constraint trigger): re-key the customers this transaction queued,
-- then fold its pending rows into the totals. The first event does it all; the others of the
-- same transaction find the queue empty.
CREATE FUNCTION crm_rollup_settle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
    queued bigint;
    ids bigint[];
BEGIN
    WITH drained AS (
        DELETE FROM rollup_rekey_queue WHERE txid = me RETURNING customer_ids
    ) SELECT count(*), (SELECT array_agg(DISTINCT c ORDER BY c)
                        FROM drained d, unnest(d.customer_ids) c)
      INTO queued, ids FROM drained;
    IF queued = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM crm_rollup_rekey(ids);
    {"".join(_fold(table) for table in PENDING)}
    PERFORM set_config('crm.rollup_settle_queued', '', true);
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER rollup_rekey_queue_settle AFTER INSERT ON rollup_rekey_queue
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crm_rollup_settle();
"""


def _orders(event: str) -> str:
    changes = _changes("orders", event)
    day = "(created_at AT TIME ZONE 'UTC')::date"
    by_tier = "changes JOIN rollup_customer_keys k USING (customer_id)"
    attributed = (
        "(SELECT k.campaign_id, c.* FROM changes c JOIN rollup_customer_keys k USING (customer_id)"
        " WHERE k.campaign_id IS NOT NULL"
        " AND (k.touched_at IS NULL OR c.created_at >= k.touched_at)) a"
    )
    return f"""
    {changes} {_order_sums("rollup_orders_daily", "day", "changes", day)};{WROTE}
    {_lock_keys("SELECT customer_id FROM changes", changes)}
    {changes} {_order_sums("rollup_tier_revenue", "tier", by_tier)};{WROTE}
    {changes} {_order_sums("rollup_attributed_revenue", "campaign_id", attributed)};{WROTE}
    {SETTLE_LATER}"""


def _customers(event: str) -> str:
    changes = _changes("customers", event)
    body = f"{changes} {_counts('rollup_customers_by_tier', 'tier', 'changes')};{WROTE}"
    # An UPDATE that changes a customer's id removes one keys row and adds another.
    old_only = " AND NOT EXISTS (SELECT FROM new_rows n WHERE n.id = o.id)"
    new_only = " WHERE NOT EXISTS (SELECT FROM old_rows o WHERE o.id = n.id)"
    if event != "INSERT":  # gone customers leave their campaign (orders: none, by the FK)
        body += f"""
    WITH gone AS (
        DELETE FROM rollup_customer_keys k USING old_rows o
        WHERE k.customer_id = o.id{old_only if event == "UPDATE" else ""}
        RETURNING k.campaign_id, -1 AS sign
    ) {_counts("rollup_attributed_customers", "campaign_id", "gone", "campaign_id IS NOT NULL")};
    {WROTE}"""
    if event != "DELETE":
        body += f"""
    INSERT INTO rollup_customer_keys (customer_id, tier)
    SELECT n.id, n.tier FROM new_rows n{new_only if event == "UPDATE" else ""} ORDER BY 1
    ON CONFLICT (customer_id) DO NOTHING;
    """
    if event == "UPDATE":
        body += _rekey_later(
            "SELECT n.id FROM new_rows n JOIN old_rows o USING (id) WHERE n.tier <> o.tier"
        )
    return body + SETTLE_LATER


def _leads(event: str) -> str:
    changes, source = _changes("leads", event), rollups.LEAD_SOURCE
    day = f"(created_time AT TIME ZONE 'UTC')::date, {source}"
    body = f"""
    {changes} {_counts("rollup_leads_by_source", source, "changes")};{WROTE}
    {changes} {_counts("rollup_leads_daily", day, "changes", "created_time IS NOT NULL")};{WROTE}
    """
    return body + _rekey_later("SELECT customer_id FROM changes", changes) + SETTLE_LATER


def _unmap_ads(ids: str) -> str:
    """Ads `ids` no longer give leads a campaign; `changed` collects them."""
    return f"""
    WITH up AS (
        UPDATE rollup_ad_campaigns r SET campaign_id = NULL
        FROM (SELECT ad_id FROM rollup_ad_campaigns WHERE ad_id IN ({ids})
              AND campaign_id IS NOT NULL ORDER BY 1 FOR UPDATE) l
        WHERE r.ad_id = l.ad_id RETURNING r.ad_id
    ) SELECT coalesce(changed, '{{}}') || coalesce(array_agg(ad_id), '{{}}') INTO changed FROM up;
    """


# Customers whose leads take their campaign from the ads in `changed`.
_REKEY_ADS = _rekey_later(
    "SELECT customer_id FROM leads WHERE ad_id = ANY(changed) AND campaign_id IS NULL"
)


def _ads(event: str) -> str:
    """Re-map the ads whose campaign changed, then queue the customers whose leads use them."""
    body = ""
    if event != "DELETE":
        body += """
    WITH up AS (
        INSERT INTO rollup_ad_campaigns AS r (ad_id, campaign_id)
        SELECT id, campaign_id FROM new_rows ORDER BY 1
        ON CONFLICT (ad_id) DO UPDATE SET campaign_id = excluded.campaign_id
        WHERE r.campaign_id IS DISTINCT FROM excluded.campaign_id RETURNING ad_id
    ) SELECT array_agg(ad_id) INTO changed FROM up;
    """
    if event != "INSERT":
        gone = "SELECT id FROM old_rows" + (
            " EXCEPT SELECT id FROM new_rows" if event == "UPDATE" else ""
        )
        body += _unmap_ads(gone)
    return body + _REKEY_ADS


# Insights by day and campaign, and all time by campaign (what the newest synced_at of a key is
# read again from). Written by the sync alone, so their keys are not hot: added to in place.
INSIGHT_LEVELS = {
    "rollup_ad_insights_daily": (("date", "campaign_id"), "ad_insights_daily"),
    "rollup_ad_insights_by_campaign": (("campaign_id",), "rollup_ad_insights_daily"),
}


def _insights(event: str) -> str:
    changes = _changes("ad_insights_daily", event)
    sums = "rows, spend, impressions, clicks, leads, purchases, purchase_value"
    body = ""
    for table, (keys, source) in INSIGHT_LEVELS.items():
        key_list, positions = ", ".join(keys), ", ".join(str(i + 1) for i in range(len(keys)))
        same = " AND ".join(f"r.{k} = c.{k}" for k in keys)
        body += f"""
    {changes} INSERT INTO {table} AS r ({key_list}, {sums}, synced_at)
    SELECT {key_list}, sum(sign), sum(sign * spend), sum(sign * impressions),
           sum(sign * clicks), sum(sign * leads), sum(sign * purchases),
           sum(sign * purchase_value),
           -- (only a rollup already out of step gets a key with removed rows alone)
           coalesce(max(synced_at) FILTER (WHERE sign > 0), max(synced_at))
    FROM changes GROUP BY {positions} ORDER BY {positions}
    {_add(table, sums)}, synced_at = greatest(r.synced_at, excluded.synced_at);
    """
        if event == "INSERT":
            continue
        # The newest synced_at of a key can only fall when the statement removed the row holding
        # it and added none as new: then read it again, from that key's rows only.
        body += f"""
    {changes} DELETE FROM {table} r USING changes c WHERE {same} AND r.rows = 0;
    {changes}, moved AS (
        SELECT {key_list}, max(synced_at) FILTER (WHERE sign < 0) AS removed,
               max(synced_at) FILTER (WHERE sign > 0) AS added
        FROM changes GROUP BY {positions}
    ) UPDATE {table} r SET synced_at = (
        SELECT max(c.synced_at) FROM {source} c WHERE {same})
    FROM moved c WHERE {same} AND c.removed >= r.synced_at
      AND (c.added IS NULL OR c.added < c.removed);
    """
    return body


# What a TRUNCATE of each source leaves: the rollups it feeds are emptied (customers: its
# CASCADE or table list truncates orders and leads too).
TRUNCATE_BODIES = {
    "orders": "DELETE FROM rollup_orders_daily; DELETE FROM rollup_tier_revenue;"
    " DELETE FROM rollup_attributed_revenue;",
    "customers": "DELETE FROM rollup_customers_by_tier; DELETE FROM rollup_customer_keys;"
    " DELETE FROM rollup_tier_revenue; DELETE FROM rollup_attributed_customers;"
    " DELETE FROM rollup_attributed_revenue;",
    "leads": "UPDATE rollup_customer_keys SET campaign_id = NULL, touched_at = NULL"
    " WHERE campaign_id IS NOT NULL; DELETE FROM rollup_attributed_customers;"
    " DELETE FROM rollup_attributed_revenue; DELETE FROM rollup_leads_daily;"
    " DELETE FROM rollup_leads_by_source;",
    "ads": _unmap_ads("SELECT ad_id FROM rollup_ad_campaigns") + _REKEY_ADS,
    "ad_insights_daily": "DELETE FROM rollup_ad_insights_daily;"
    " DELETE FROM rollup_ad_insights_by_campaign;",
}
BODIES = {
    "orders": _orders,
    "customers": _customers,
    "leads": _leads,
    "ads": _ads,
    "ad_insights_daily": _insights,
}


def _function(name: str, body: str, rows: str = "") -> str:
    # Nothing to do for a statement that wrote no row through this event (INSERT ... ON
    # CONFLICT fires both the INSERT and the UPDATE triggers, one of them usually empty).
    guard = f"    IF NOT EXISTS (SELECT FROM {rows}) THEN\n        RETURN NULL;\n    END IF;\n"
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"DECLARE\n    changed text[];\n    wrote boolean := false;\nBEGIN\n"
        f"{guard if rows else ''}{body}\n    RETURN NULL;\nEND\n$$;"
    )


def _create_triggers() -> None:
    op.execute(SETTLE)
    for table, body in BODIES.items():
        # A trigger with transition tables may name only one event, hence one per event.
        for event, transitions in EVENTS.items():
            name = f"crm_rollup_{table}_{event.lower()}"
            rows = "old_rows" if event == "DELETE" else "new_rows"
            op.execute(_function(name, body(event), rows))
            op.execute(
                f"CREATE TRIGGER {table}_rollup_{event.lower()} AFTER {event} ON {table}"
                f" REFERENCING {transitions} FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        op.execute(_function(f"crm_rollup_{table}_truncate", TRUNCATE_BODIES[table]))
        op.execute(
            f"CREATE TRIGGER {table}_rollup_truncate AFTER TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION crm_rollup_{table}_truncate()"
        )


def _create_tables() -> None:
    pending = sa.text("pg_current_xact_id()")
    for name, (keys, values) in TABLES.items():
        txid = [sa.Column("pending_txid", Xid8(), nullable=False, server_default=pending)]
        op.create_table(
            name,
            *(txid if name in PENDING else []),
            *(sa.Column(c, t, nullable=False) for c, t in keys.items()),
            *(sa.Column(c, t, nullable=c in NULLABLE) for c, t in values.items()),
            sa.PrimaryKeyConstraint(
                *(["pending_txid"] if name in PENDING else []), *keys, name=f"pk_{name}"
            ),
        )
    op.create_table(
        "rollup_rekey_queue",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("txid", Xid8(), nullable=False, server_default=pending),
        sa.Column("customer_ids", sa.ARRAY(sa.BigInteger), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_rekey_queue"),
    )
    op.create_index("ix_rollup_rekey_queue_txid", "rollup_rekey_queue", ["txid"])


def upgrade() -> None:
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
    op.create_index("ix_leads_ad_id", "leads", ["ad_id"])
    _create_tables()
    _create_triggers()
    _run_as_owner()
    rollups.rebuild_rollups(op.get_bind())


def _run_as_owner() -> None:
    """Other apps write orders, customers and leads with their own roles' grants only (the
    documented contract): the rollup functions run as their owner, on the migration's
    search_path, so such a write needs no grant on the rollups; none is callable directly."""
    names = op.get_bind().execute(
        sa.text(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'crm\\_rollup\\_%'"
            " AND pronamespace = current_schema()::regnamespace"
        )
    )
    for (name,) in names:
        op.execute(f"ALTER FUNCTION {name} SECURITY DEFINER SET search_path FROM CURRENT")
        op.execute(f"REVOKE EXECUTE ON FUNCTION {name} FROM PUBLIC")


def downgrade() -> None:
    for table in BODIES:
        for event in (*EVENTS, "TRUNCATE"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_rollup_{event.lower()} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS crm_rollup_{table}_{event.lower()}()")
    for table in (*TABLES, "rollup_rekey_queue"):
        op.drop_table(table)
    for function in ("crm_rollup_rekey(bigint[])", "crm_rollup_settle()"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.drop_index("ix_leads_ad_id", "leads")
    op.drop_index("ix_orders_created_at", "orders")
