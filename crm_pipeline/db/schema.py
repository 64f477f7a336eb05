"""The source-of-truth schema (SQLAlchemy Core).

Table and column names in docs/architecture.md's "Contracts" are relied on by analysts and
other apps: keep them. Every table has a natural key so that re-running a sync is an
idempotent upsert. The Alembic migrations under `migrations/` create exactly this; a test
compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.types import UserDefinedType


class Xid8(UserDefinedType):
    """PostgreSQL's 64-bit transaction id type (`xid8`, PostgreSQL 13+), read as text."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "xid8"


# Teach reflection the type too, so schema comparisons (tests, autogenerate) see it.
postgresql_base.ischema_names.setdefault("xid8", Xid8)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _timestamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


# --- Facebook marketing objects (natural key: Meta's id) -------------------------------------

ad_accounts = Table(
    "ad_accounts",
    metadata,
    Column("id", Text, primary_key=True),  # act_<digits>
    Column("name", Text),
    Column("currency", Text),
    Column("timezone_name", Text),
    Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, nullable=False, index=True),
    Column("name", Text),
    Column("status", Text),
    Column("objective", Text),
    Column("created_time", DateTime(timezone=True)),
    Column("updated_time", DateTime(timezone=True)),
)

adsets = Table(
    "adsets",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, nullable=False, index=True),
    Column("campaign_id", Text, nullable=False),
    Column("name", Text),
    Column("status", Text),
    Column("created_time", DateTime(timezone=True)),
    Column("updated_time", DateTime(timezone=True)),
)

ads = Table(
    "ads",
    metadata,
    Column("id", Text, primary_key=True),
    Column("account_id", Text, nullable=False, index=True),
    Column("campaign_id", Text, nullable=False),
    Column("adset_id", Text, nullable=False),
    Column("name", Text),
    Column("status", Text),
    Column("created_time", DateTime(timezone=True)),
    Column("updated_time", DateTime(timezone=True)),
)

# One row per ad and day. Spend is NUMERIC: Meta sends decimal strings and money is never float.
ad_insights_daily = Table(
    "ad_insights_daily",
    metadata,
    Column("account_id", Text, nullable=False),
    Column("campaign_id", Text, nullable=False),
    Column("adset_id", Text, nullable=False),
    Column("ad_id", Text, primary_key=True),
    Column("date", Date, primary_key=True),
    Column("impressions", BigInteger, nullable=False, server_default=text("0")),
    Column("clicks", BigInteger, nullable=False, server_default=text("0")),
    Column("spend", Numeric(18, 4), nullable=False, server_default=text("0")),
    Column("reach", BigInteger),
    Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actions", JSONB),  # Meta's actions list, kept whole
    Column("leads", BigInteger, nullable=False, server_default=text("0")),  # from actions
    # Migration 0006: Meta's value fields, nullable or defaulted so writers that follow the
    # documented contract (which does not name them) still succeed.
    Column("frequency", Numeric),  # impressions / reach, as Meta reports it
    Column("action_values", JSONB),  # Meta's action_values list, kept whole
    Column("conversions", JSONB),  # Meta's conversions list, kept whole
    # From actions / action_values: the `purchase` type, else the pixel's (never both).
    Column("purchases", BigInteger, nullable=False, server_default=text("0")),
    Column("purchase_value", Numeric(18, 4), nullable=False, server_default=text("0")),
    Index("ix_ad_insights_daily_account_id_date", "account_id", "date"),
    Index("ix_ad_insights_daily_campaign_id_date", "campaign_id", "date"),
)

# Meta's own totals of an ad account and day (level=account insights, migration 0006): what
# the sum of that day's ad_insights_daily rows must match (the `matches_account_totals` check).
# account_id is Meta's, without the act_ prefix, as in ad_insights_daily.
ad_account_insights_daily = Table(
    "ad_account_insights_daily",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("date", Date, primary_key=True),
    Column("spend", Numeric(18, 4), nullable=False, server_default=text("0")),
    Column("impressions", BigInteger, nullable=False, server_default=text("0")),
    Column("clicks", BigInteger, nullable=False, server_default=text("0")),
    Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# --- CRM core -----------------------------------------------------------------------------------

customers = Table(
    "customers",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text),
    Column("email", Text),
    Column("phone", Text),
    Column("tier", Text, nullable=False, server_default=text("'standard'")),
    Column("fb_psid", Text),
    *_timestamps(),
    Column("updated_by", Text),  # set by a trigger: the actor of the last real change
    # Natural keys: one customer per email and per Messenger PSID (NULLs allowed, many).
    UniqueConstraint("email"),
    UniqueConstraint("fb_psid"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    # The shop's order number: the natural key when present. Nullable, because the documented
    # contract of `orders` does not include it and writers that follow the contract must succeed.
    Column("external_id", Text),
    Column(
        "customer_id",
        BigInteger,
        ForeignKey("customers.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("amount", Numeric(14, 2), nullable=False),
    Column("currency", Text, nullable=False, server_default=text("'USD'")),
    Column("status", Text, nullable=False, server_default=text("'paid'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("external_id"),
    # Migration 0008: the newest order (summary.json's freshness) without reading every order.
    Index("ix_orders_created_at", "created_at"),
)

leads = Table(
    "leads",
    metadata,
    Column("id", Text, primary_key=True),  # Meta's leadgen id
    Column("form_id", Text),
    Column("ad_id", Text),
    Column("created_time", DateTime(timezone=True)),
    Column("email", Text),
    Column("phone", Text),
    Column("full_name", Text),
    Column("field_data", JSONB),
    Column(
        "customer_id",
        BigInteger,
        ForeignKey("customers.id", ondelete="SET NULL"),
        index=True,
    ),
    Column("page_id", Text),
    Column("campaign_id", Text),
    Index("ix_leads_created_time", "created_time"),
    # Migration 0008: the leads whose first-touch campaign an ads write changes.
    Index("ix_leads_ad_id", "ad_id"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Text, primary_key=True),  # Meta's t_<id>
    Column("page_id", Text, nullable=False),
    Column(
        "customer_id",
        BigInteger,
        ForeignKey("customers.id", ondelete="SET NULL"),
        index=True,
    ),
    Column("updated_time", DateTime(timezone=True)),
    Column("psid", Text, index=True),  # the customer's page-scoped id in this conversation
)

messages = Table(
    "messages",
    metadata,
    Column("id", Text, primary_key=True),  # Meta's message id (mid)
    Column(
        "conversation_id",
        Text,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("from_id", Text),
    Column("text", Text),
    Column("created_time", DateTime(timezone=True), index=True),
)

# --- Plumbing -----------------------------------------------------------------------------------

# Written only by the triggers in migration 0001. `txid` is the writer's transaction id (xid8):
# readers take rows below the snapshot's xmin, which is safe under out-of-order commits where an
# auto-increment `id` cursor is not (invariant 1 in docs/architecture.md).
change_log = Table(
    "change_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("txid", Xid8(), nullable=False, server_default=text("pg_current_xact_id()")),
    Column("entity", Text, nullable=False),
    Column("entity_key", Text),
    Column("op", Text, nullable=False),
    Column("row_count", Integer, nullable=False, server_default=text("1")),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("customer_id", BigInteger),  # the customer whose cache files the change affects
    # Who wrote it: `crm.actor` set by the API for its transaction, else the database role.
    Column("actor", Text, nullable=False, server_default=text("crm_current_actor()")),
    Index("ix_change_log_txid", "txid"),
    Index("ix_change_log_changed_at", "changed_at"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("scope", Text, primary_key=True),  # e.g. an ad account id or a page id
    Column("state", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

INBOX_STATUS = (
    "CASE WHEN rejected_at IS NOT NULL THEN 'rejected'"
    " WHEN processed_at IS NOT NULL THEN 'processed' ELSE 'pending' END"
)

webhook_inbox = Table(
    "webhook_inbox",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("source", Text, nullable=False),  # leadgen | messages | ...
    Column("event_key", Text, nullable=False),  # leadgen_id or message mid: Meta redelivers
    Column("payload", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True)),
    Column("error", Text),  # the reason, for rejected entries and failed enrichments
    Column("rejected_at", DateTime(timezone=True)),  # malformed entry of a signed delivery
    Column("status", Text, Computed(INBOX_STATUS, persisted=True), nullable=False),
    UniqueConstraint("source", "event_key"),
)

# Keys of API clients. Only a SHA-256 of each key is kept; `key_prefix` identifies it in lists.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("key_prefix", Text, nullable=False),
    Column("key_hash", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("key_hash"),
    Index(
        "ix_api_keys_active_name", "name", unique=True, postgresql_where=text("revoked_at IS NULL")
    ),
)

# The cache worker's heartbeat and progress (migration 0005): every change with txid below
# `watermark` has reached its cache files. The change-log sensor reads it.
cache_worker_state = Table(
    "cache_worker_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("watermark", Text),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
)

# Erasure requests carried out (migration 0007): the kind of selector, when, by whom, and how
# many rows of each table; never the erased values.
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("selector", Text, nullable=False),  # customer_id | email | phone | psid
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("counts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

# Each identifier of an erased person as an HMAC-SHA256 keyed with CRM_MASK_KEY (migration
# 0007): what a later sync or webhook is checked against, without the value in clear.
erased_identifiers = Table(
    "erased_identifiers",
    metadata,
    Column("kind", Text, primary_key=True),  # email | phone | psid | lead | conversation
    Column("digest", Text, primary_key=True),
    Column("erasure_id", BigInteger, ForeignKey("erasures.id", ondelete="CASCADE"), nullable=False),
)

# --- KPI rollups (migration 0008) --------------------------------------------------------------
# Kept equal to their source tables by statement-level triggers (see `db/rollups.py`, which
# also recomputes them from scratch for the drift check and for repair). summary.json reads
# these, a few thousand rows, instead of every order, lead and insight row. Money keeps the
# scale of its source column, so sums print with the same digits as before.

Revenue = Numeric(30, 2)  # sums of orders.amount, numeric(14, 2)
InsightMoney = Numeric(30, 4)  # sums of ad_insights_daily.spend / purchase_value, numeric(18, 4)


def _pending_txid() -> Column:
    """Rollups every writer adds to: 0 on the committed totals; a writer's transaction id on
    its own deltas, which a trigger folds into the totals at its commit (so writers never wait
    for each other's row until then). Readers sum a key's rows, as they only see totals."""
    return Column(
        "pending_txid", Xid8(), primary_key=True, server_default=text("pg_current_xact_id()")
    )


def _order_sums(name: str, key: Column) -> Table:
    """Orders and their revenue per `key`, currency and status."""
    return Table(
        name,
        metadata,
        _pending_txid(),
        key,
        Column("currency", Text, primary_key=True),
        Column("status", Text, primary_key=True),
        Column("orders", BigInteger, nullable=False),
        Column("revenue", Revenue, nullable=False),
    )


def _counts(name: str, count: str, *keys: Column) -> Table:
    return Table(name, metadata, _pending_txid(), *keys, Column(count, BigInteger, nullable=False))


# Orders by UTC day of created_at; by their customer's tier (as `rollup_customer_keys` says).
rollup_orders_daily = _order_sums("rollup_orders_daily", Column("day", Date, primary_key=True))
rollup_tier_revenue = _order_sums("rollup_tier_revenue", Column("tier", Text, primary_key=True))
rollup_customers_by_tier = _counts(
    "rollup_customers_by_tier", "customers", Column("tier", Text, primary_key=True)
)


def _insight_sums(name: str, *keys: Column) -> Table:
    """ad_insights_daily summed per `keys`: `rows` counts the ad rows, `synced_at` the newest."""
    return Table(
        name,
        metadata,
        *keys,
        Column("rows", BigInteger, nullable=False),
        Column("spend", InsightMoney, nullable=False),
        *(Column(c, BigInteger, nullable=False) for c in ("impressions", "clicks", "leads",
                                                          "purchases")),
        Column("purchase_value", InsightMoney, nullable=False),
        Column("synced_at", DateTime(timezone=True), nullable=False),
    )  # fmt: skip


# Insights by day and campaign, and all time by campaign.
rollup_ad_insights_daily = _insight_sums(
    "rollup_ad_insights_daily",
    Column("date", Date, primary_key=True),
    Column("campaign_id", Text, primary_key=True),
)
rollup_ad_insights_by_campaign = _insight_sums(
    "rollup_ad_insights_by_campaign", Column("campaign_id", Text, primary_key=True)
)

# Leads by UTC day of created_time and source ('facebook_lead_ads': form_id set; 'other'),
# and all time by source (leads without a created_time included).
rollup_leads_daily = _counts(
    "rollup_leads_daily",
    "leads",
    Column("day", Date, primary_key=True),
    Column("source", Text, primary_key=True),
)
rollup_leads_by_source = _counts(
    "rollup_leads_by_source", "leads", Column("source", Text, primary_key=True)
)

# One row per customer: the tier and first touch (campaign, lead time) their orders are booked
# under. Triggers lock and rewrite it before booking or moving a customer's orders, so writers
# of the same customer take turns (migration 0008 says how).
rollup_customer_keys = Table(
    "rollup_customer_keys",
    metadata,
    Column("customer_id", BigInteger, primary_key=True),
    Column("tier", Text, nullable=False),
    Column("campaign_id", Text),  # null: not attributed to any campaign
    Column("touched_at", DateTime(timezone=True)),  # the first-touch lead's created_time
)

# The campaign of each ad as the attribution rollups use it (null: the ad is not in `ads`, or
# no longer), also the row that lead writers and ads writers of the same ad take turns on.
rollup_ad_campaigns = Table(
    "rollup_ad_campaigns",
    metadata,
    Column("ad_id", Text, primary_key=True),
    Column("campaign_id", Text),
)

# First-touch attribution: customers per campaign, and their orders counted for it (those
# created at or after the first-touch lead).
rollup_attributed_customers = _counts(
    "rollup_attributed_customers", "customers", Column("campaign_id", Text, primary_key=True)
)
rollup_attributed_revenue = _order_sums(
    "rollup_attributed_revenue", Column("campaign_id", Text, primary_key=True)
)

# What a transaction must settle at its commit (a deferred trigger does, and empties its rows):
# customers whose keys it changed (tier, or leads or ads that may move the first touch), and
# its pending rollup deltas.
rollup_rekey_queue = Table(
    "rollup_rekey_queue",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("txid", Xid8(), nullable=False, server_default=text("pg_current_xact_id()")),
    Column("customer_ids", ARRAY(BigInteger), nullable=False),
    Index("ix_rollup_rekey_queue_txid", "txid"),
)

# Tables whose writes are logged row by row (entity_key = the row's key) ...
ROW_LOGGED_TABLES = ("customers", "orders", "leads", "conversations", "messages")
# ... and those logged per statement, grouped by a coarse key, so bulk loads write few rows.
STATEMENT_LOGGED_TABLES = {
    "ad_insights_daily": "account_id || '/' || date::text",
    "campaigns": "account_id",
    "adsets": "account_id",
    "ads": "account_id",
}
