"""Source-of-truth tables in PostgreSQL, as assets.

The Facebook tables are loaded from the raw Parquet by the bulk upsert, and each incremental
stream's watermark in `sync_state` is advanced in the same transaction as its rows. `customers`
and `orders` are written by the API, other apps and people with psql, not by Dagster: they are
external assets so that lineage shows what the caches and the summary are built from.
"""

from collections.abc import Iterable
from typing import Any

import dagster as dg
import pyarrow as pa
from sqlalchemy import Connection

from crm_pipeline import lake
from crm_pipeline.db import schema
from crm_pipeline.db.crm_core import link_conversations_to_customers, link_leads_to_customers
from crm_pipeline.db.privacy.identifiers import ErasedIdentifiers
from crm_pipeline.db.sync_state import get_state, put_state
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs import groups
from crm_pipeline.defs.crm.insight_loads import (
    DAYS_PER_TRANSACTION,
    load_insight_days,
    read_landed_day,
)
from crm_pipeline.defs.crm.insight_totals import account_totals_result, matches_account_totals
from crm_pipeline.defs.facebook.assets import (
    OBJECT_STREAMS,
    fb_ad_insights_raw,
)
from crm_pipeline.defs.facebook.partitions import add_partition_metadata, insights_partitions
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook.account_threads import each_account
from crm_pipeline.facebook.ids import meta_account_id
from crm_pipeline.facebook.transforms import (
    ad_account_row,
    conversation_row,
    flatten_lead,
    message_row,
)

# Connections loading a range's accounts at once: PostgreSQL merges on its own cores while this
# process reads the next Parquet file; within the engine's default pool (5).
DB_LOAD_THREADS = 4

customers = dg.AssetSpec(
    "customers",
    group_name=groups.CRM,
    kinds={"postgres"},
    owners=["team:crm"],
    description="CRM customers (PostgreSQL table `customers`), written by the API and other apps.",
)
orders = dg.AssetSpec(
    "orders",
    group_name=groups.CRM,
    kinds={"postgres"},
    owners=["team:crm"],
    deps=[customers],
    description="Customer orders (PostgreSQL table `orders`), written by the shop and the API.",
)


@dg.asset(
    partitions_def=insights_partitions,
    # A backfill of many days is one run, like the raw asset's; each day commits on its own.
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[fb_ad_insights_raw],
    group_name=groups.FACEBOOK,
    kinds={"postgres"},
    owners=["team:data-engineering"],
    check_specs=[matches_account_totals],
    description=(
        "One row per ad and day (PostgreSQL table `ad_insights_daily`), upserted from the raw "
        "Parquet partition on (ad_id, date) through COPY + INSERT … ON CONFLICT, with leads, "
        "purchases and Meta's purchase value lifted out of actions / action_values. The "
        "account-day then mirrors Meta exactly: rows Meta no longer reports for it are deleted. "
        "Meta's account-level totals of the same days go to `ad_account_insights_daily`, and "
        "the check matches_account_totals compares the two."
    ),
)
def ad_insights_daily(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Upsert the run's account-days of raw insights into PostgreSQL, an account's month of
    days to a transaction, then check them against Meta's account totals.

    Per account-month rather than one transaction for a whole range (accounts at once, up to
    DB_LOAD_THREADS connections): each day's upsert and mirror delete stay atomic, a
    transaction never holds more than one account's 31 days of rows, and a long backfill does
    not hold back the change-log watermark (pg_snapshot_xmin) the cache sensor reads below for
    its whole duration; a failed range is re-run whole, which is idempotent.
    """
    totals: dict[str, int] = {}
    # MultiPartitionKeys, account-first like their strings: one account's days in date order.
    keys = sorted(context.partition_keys, key=str)
    by_account: dict[str, list] = {}
    for key in keys:
        by_account.setdefault(key.keys_by_dimension["account"], []).append(key)
    engine = postgres.engine()
    compared: list[tuple[str, str]] = []  # (Meta's account id, day) with Meta's totals loaded
    unchecked: list[tuple[str, str]] = []

    def load_account(account_id: str) -> list[tuple[Any, dict[str, Any], bool]]:
        loaded = []
        account_keys = by_account[account_id]
        for start in range(0, len(account_keys), DAYS_PER_TRANSACTION):
            chunk = {
                k.keys_by_dimension["date"]: k for k in account_keys[start:][:DAYS_PER_TRANSACTION]
            }
            days = [read_landed_day(storage.data_path(), account_id, day) for day in chunk]
            with engine.begin() as conn:
                counts = load_insight_days(conn, account_id, days)
            loaded += [(chunk[d.day], counts[d.day], d.totals is not None) for d in days]
        return loaded

    # Accounts side by side (disjoint rows; PostgreSQL does the work on its own cores), each
    # account's days in order; reported here, in the step's thread, as each account finishes.
    outcomes = []
    for outcome in each_account(load_account, list(by_account), threads=DB_LOAD_THREADS):
        outcomes.append(outcome)
        if outcome.error is not None:
            context.log.error(f"ad_insights_daily {outcome.account_id} failed: {outcome.error}")
            continue
        _report_account(context, outcome, compared, unchecked, totals, len(keys))
    failed = next((o for o in outcomes if o.error is not None), None)
    if failed is not None:
        raise failed.error
    metadata: dict[str, Any] = {"table": "ad_insights_daily", "database": postgres.display_url()}
    if len(keys) > 1:
        metadata.update(
            {"range_partitions": len(keys), **{f"range_{k}": v for k, v in totals.items()}}
        )
    with engine.connect() as conn:
        check = account_totals_result(conn, compared, unchecked)
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def _report_account(
    context, outcome, compared: list, unchecked: list, totals: dict, partitions: int
) -> None:
    """One account's loaded days: each partition's counts as its metadata, the days with and
    without Meta's totals (for the check), the run's totals, and one line in the run's log."""
    account_totals: dict[str, int] = {}
    for key, counts, has_totals in outcome.value or []:
        day = key.keys_by_dimension["date"]
        (compared if has_totals else unchecked).append((meta_account_id(outcome.account_id), day))
        # Each partition's materialisation carries its own counts.
        add_partition_metadata(context, counts, key, partitions)
        for name, value in counts.items():
            account_totals[name] = account_totals.get(name, 0) + value
            totals[name] = totals.get(name, 0) + value
    # One line per account (a range's days each have their counts in their metadata).
    context.log.info(
        f"ad_insights_daily {outcome.account_id}: {len(outcome.value or [])} day(s), "
        f"{account_totals.get('inserted', 0)} inserted, "
        f"{account_totals.get('updated', 0)} updated, "
        f"{account_totals.get('unchanged', 0)} unchanged, "
        f"{account_totals.get('deleted', 0)} deleted"
    )


def _advance(conn: Connection, stream: str, scopes: dict[str, str], key: str) -> dict[str, str]:
    """Move each scope's watermark forward to the newest value seen (never backwards)."""
    marks = {}
    for scope, newest in scopes.items():
        state = get_state(conn, stream, scope)
        if newest and newest > (state.get(key) or ""):
            state[key] = newest
            put_state(conn, stream, scope, state)
        marks[scope] = state.get(key) or ""
    return marks


def _newest(rows: Iterable[dict], scope_key: str, time_key: str) -> dict[str, str]:
    # Meta's "+0000" timestamps sort chronologically as text.
    newest: dict[str, str] = {}
    for row in rows:
        scope, when = row.get(scope_key), row.get(time_key)
        if scope and when and when > newest.get(scope, ""):
            newest[scope] = when
    return newest


def _load(storage: StorageResource, stream: str) -> pa.Table:
    # The newest sync holds every row since the watermark, which only this load advances.
    return lake.read_newest_sync(storage.data_path(), stream)


def _upsert_result(name: str, result, **extra: Any) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=name,
        metadata={
            "rows": result.staged,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "upsert_seconds": round(result.seconds, 3),
            "table": name,
            **extra,
        },
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            kind,
            deps=[f"fb_{kind}_raw"],
            group_name=groups.FACEBOOK,
            kinds={"postgres"},
            owners=["team:data-engineering"],
            description=f"PostgreSQL table `{kind}`, upserted on Meta's id.",
        )
        for kind in OBJECT_STREAMS
    ]
    + [
        dg.AssetSpec(
            "ad_accounts",
            deps=["fb_ad_accounts_raw"],
            group_name=groups.FACEBOOK,
            kinds={"postgres"},
            owners=["team:data-engineering"],
            description=(
                "PostgreSQL table `ad_accounts`: name, currency and time zone of each configured "
                "ad account, upserted on its act_<digits> id."
            ),
        )
    ]
)
def ad_objects(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
):
    """Upsert ad accounts, campaigns, ad sets and ads; advance each account's updated_time
    watermark."""
    with postgres.engine().begin() as conn:
        accounts = _load(storage, "ad_accounts").to_pylist()
        result = bulk_upsert(conn, schema.ad_accounts, map(ad_account_row, accounts))
        yield _upsert_result("ad_accounts", result)
        for kind in OBJECT_STREAMS:
            table = _load(storage, kind)
            db_table = schema.metadata.tables[kind]
            # The raw landing keeps more of Meta's fields (effective_status) than the table has.
            columns = [c for c in table.column_names if c in db_table.c]
            result = bulk_upsert(conn, db_table, table.select(columns))
            marks = _advance(
                conn, kind, _newest(table.to_pylist(), "account_id", "updated_time"), "updated_time"
            )
            yield _upsert_result(kind, result, watermark=dg.MetadataValue.json(marks))


@dg.asset(
    deps=["fb_leads_raw", customers],
    group_name=groups.FACEBOOK,
    kinds={"postgres"},
    owners=["team:crm"],
    description=(
        "PostgreSQL table `leads`: Lead Ads leads with email, phone and full name flattened "
        "from field_data (kept whole too); upserted on the leadgen id."
    ),
)
def leads(postgres: PostgresResource, storage: StorageResource) -> dg.MaterializeResult:
    """Upsert new leads; advance each form's time_created watermark."""
    raw = _load(storage, "leads").to_pylist()
    with postgres.engine().begin() as conn:
        # Erased people stay erased, even from a raw file landed before their erasure.
        kept, dropped = ErasedIdentifiers.load(conn).keep(raw)
        result = bulk_upsert(conn, schema.leads, [flatten_lead(r) for r in kept])
        linked = link_leads_to_customers(conn)
        marks = _advance(conn, "leads", _newest(raw, "form_id", "created_time"), "created_time")
    return _upsert_result(
        "leads", result, **linked, dropped_erased=dropped, watermark=dg.MetadataValue.json(marks)
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "conversations",
            deps=["fb_conversations_raw", customers],
            group_name=groups.FACEBOOK,
            kinds={"postgres"},
            owners=["team:crm"],
            description=(
                "PostgreSQL table `conversations`: Messenger threads of the page, linked to "
                "customers by PSID (customers.fb_psid)."
            ),
        ),
        dg.AssetSpec(
            "messages",
            deps=["fb_messages_raw", "conversations"],
            group_name=groups.FACEBOOK,
            kinds={"postgres"},
            owners=["team:crm"],
            description="PostgreSQL table `messages`: the messages of those conversations.",
        ),
    ]
)
def conversations_and_messages(postgres: PostgresResource, storage: StorageResource):
    """Upsert conversations (linked to customers by PSID) and their messages."""
    convs = _load(storage, "conversations").to_pylist()
    msgs = _load(storage, "messages").to_pylist()
    with postgres.engine().begin() as conn:
        # Erased people stay erased, even from a raw file landed before their erasure.
        kept_convs, msgs, dropped = ErasedIdentifiers.load(conn).keep_threads(convs, msgs)
        conv_result = bulk_upsert(conn, schema.conversations, map(conversation_row, kept_convs))
        linked = link_conversations_to_customers(conn)
        msg_result = bulk_upsert(conn, schema.messages, map(message_row, msgs))
        marks = _advance(
            conn, "conversations", _newest(convs, "page_id", "updated_time"), "updated_time"
        )
    yield _upsert_result(
        "conversations",
        conv_result,
        linked_to_customers=linked,
        dropped_erased=dropped,
        watermark=dg.MetadataValue.json(marks),
    )
    yield _upsert_result("messages", msg_result)
