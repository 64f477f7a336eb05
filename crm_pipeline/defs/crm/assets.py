"""Source-of-truth tables in PostgreSQL, as assets.

The Facebook tables are loaded from the raw Parquet by the bulk upsert, and each incremental
stream's watermark in `sync_state` is advanced in the same transaction as its rows. `customers`
and `orders` are written by the API, other apps and people with psql, not by Dagster: they are
external assets so that lineage shows what the caches and the summary are built from.
"""

from collections.abc import Iterable
from typing import Any

import dagster as dg
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, text

from crm_pipeline import lake
from crm_pipeline.db import schema
from crm_pipeline.db.crm_core import link_conversations_to_customers, link_leads_to_customers
from crm_pipeline.db.sync_state import get_state, put_state
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.facebook.assets import (
    INSIGHTS_STREAM,
    OBJECT_STREAMS,
    fb_ad_insights_raw,
)
from crm_pipeline.defs.facebook.partitions import insights_partitions
from crm_pipeline.defs.resources import PostgresResource, StorageResource

# Raw Graph fields -> ad_insights_daily columns.
INSIGHTS_COLUMNS = {
    "account_id": "account_id",
    "campaign_id": "campaign_id",
    "adset_id": "adset_id",
    "ad_id": "ad_id",
    "date_start": "date",
    "impressions": "impressions",
    "clicks": "clicks",
    "spend": "spend",
    "reach": "reach",
    "actions": "actions",
}
# Meta reports Lead Ads leads under several action types; "lead" is their total when present.
LEAD_ACTION_TYPES = ("lead", "onsite_conversion.lead_grouped", "leadgen_grouped")

customers = dg.AssetSpec(
    "customers",
    group_name="crm",
    kinds={"postgres"},
    owners=["team:crm"],
    description="CRM customers (PostgreSQL table `customers`), written by the API and other apps.",
)
orders = dg.AssetSpec(
    "orders",
    group_name="crm",
    kinds={"postgres"},
    owners=["team:crm"],
    deps=[customers],
    description="Customer orders (PostgreSQL table `orders`), written by the shop and the API.",
)


def lead_count(actions_json: str | None) -> int:
    """Leads in one insights row's `actions` (0 when none)."""
    if not actions_json:
        return 0
    by_type = {a.get("action_type"): a.get("value") for a in orjson.loads(actions_json)}
    for action_type in LEAD_ACTION_TYPES:
        if by_type.get(action_type) is not None:
            return int(float(by_type[action_type]))
    return 0


@dg.asset(
    partitions_def=insights_partitions,
    # A backfill of many days is one run, like the raw asset's; each day commits on its own.
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[fb_ad_insights_raw],
    group_name="crm",
    kinds={"postgres"},
    owners=["team:data-engineering"],
    description=(
        "One row per ad and day (PostgreSQL table `ad_insights_daily`), upserted from the raw "
        "Parquet partition on (ad_id, date) through COPY + INSERT … ON CONFLICT. The account-day "
        "then mirrors Meta exactly: rows Meta no longer reports for it are deleted."
    ),
)
def ad_insights_daily(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Upsert the run's account-days of raw insights into PostgreSQL, one transaction each.

    Per account-day rather than one transaction for a whole range: each day's upsert and mirror
    delete stay atomic, a transaction never holds more than one day's rows, and a long backfill
    does not hold back the change-log watermark (pg_snapshot_xmin) the cache sensor reads below
    for its whole duration; a failed range is re-run whole, which is idempotent.
    """
    totals: dict[str, int] = {}
    # MultiPartitionKeys, account-first like their strings: one account's days in date order.
    keys = sorted(context.partition_keys, key=str)
    engine = postgres.engine()
    for key in keys:
        account_id, day = key.keys_by_dimension["account"], key.keys_by_dimension["date"]
        partition = f"account={account_id}/date={day}"
        raw = lake.read_parquet(lake.raw_path(storage.data_path(), INSIGHTS_STREAM, partition))
        rows = raw.select(list(INSIGHTS_COLUMNS)).rename_columns(list(INSIGHTS_COLUMNS.values()))
        rows = rows.append_column(
            "leads", pa.array([lead_count(a) for a in rows["actions"].to_pylist()], pa.int64())
        )
        # Meta's account_id has no act_ prefix; the partition's does.
        meta_account = account_id.removeprefix("act_")
        # With malformed rows quarantined we cannot tell which ads Meta really reports: keep all.
        mirror = not lake.quarantine_path(storage.data_path(), INSIGHTS_STREAM, partition).exists()
        with engine.begin() as conn:
            result = bulk_upsert(conn, schema.ad_insights_daily, rows)
            deleted = (
                0
                if not mirror
                else conn.execute(
                    text(
                        "DELETE FROM ad_insights_daily WHERE account_id = :account AND date = :day"
                        " AND NOT (ad_id = ANY(:ads))"
                    ),
                    {
                        "account": meta_account,
                        "day": day,
                        "ads": rows["ad_id"].to_pylist(),
                    },
                ).rowcount
            )
        context.log.info(
            f"ad_insights_daily {account_id} {day}: {result.inserted} inserted, "
            f"{result.updated} updated, {result.unchanged} unchanged, {deleted} deleted"
        )
        counts = {
            "rows": result.staged,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "deleted": deleted,
            "leads": int(pc.sum(rows["leads"]).as_py() or 0),
            "upsert_seconds": round(result.seconds, 3),
        }
        # Each partition's materialisation carries its own counts.
        context.add_asset_metadata(counts, partition_key=key)
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    metadata: dict[str, Any] = {"table": "ad_insights_daily", "database": postgres.display_url()}
    if len(keys) > 1:
        metadata.update(
            {"range_partitions": len(keys), **{f"range_{k}": v for k, v in totals.items()}}
        )
    return dg.MaterializeResult(metadata=metadata)


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
    return lake.read_parquet(lake.raw_path(storage.data_path(), stream, "latest"))


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
            group_name="crm",
            kinds={"postgres"},
            owners=["team:data-engineering"],
            description=f"PostgreSQL table `{kind}`, upserted on Meta's id.",
        )
        for kind in OBJECT_STREAMS
    ]
)
def ad_objects(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
):
    """Upsert campaigns, ad sets and ads; advance each account's updated_time watermark."""
    with postgres.engine().begin() as conn:
        for kind in OBJECT_STREAMS:
            table = _load(storage, kind)
            result = bulk_upsert(conn, schema.metadata.tables[kind], table)
            marks = _advance(
                conn, kind, _newest(table.to_pylist(), "account_id", "updated_time"), "updated_time"
            )
            yield _upsert_result(kind, result, watermark=dg.MetadataValue.json(marks))


def _field(field_data: list[dict], *names: str) -> str | None:
    for item in field_data:
        if item.get("name") in names and item.get("values"):
            return str(item["values"][0])
    return None


def flatten_lead(row: dict) -> dict:
    """A raw lead as a `leads` row: email, phone and full name lifted out of field_data."""
    data = orjson.loads(row["field_data"]) if row.get("field_data") else []
    full_name = _field(data, "full_name")
    if full_name is None:
        parts = [_field(data, "first_name"), _field(data, "last_name")]
        full_name = " ".join(p for p in parts if p) or None
    return {
        "id": row["id"],
        "form_id": row.get("form_id"),
        "ad_id": row.get("ad_id"),
        "campaign_id": row.get("campaign_id"),
        "page_id": row.get("page_id"),
        "created_time": row.get("created_time"),
        "email": _field(data, "email"),
        "phone": _field(data, "phone_number", "phone"),
        "full_name": full_name,
        "field_data": row.get("field_data"),
    }


@dg.asset(
    deps=["fb_leads_raw", customers],
    group_name="crm",
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
        result = bulk_upsert(conn, schema.leads, [flatten_lead(r) for r in raw])
        linked = link_leads_to_customers(conn)
        marks = _advance(conn, "leads", _newest(raw, "form_id", "created_time"), "created_time")
    return _upsert_result("leads", result, **linked, watermark=dg.MetadataValue.json(marks))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "conversations",
            deps=["fb_conversations_raw", customers],
            group_name="crm",
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
            group_name="crm",
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
    conv_rows = [{k: c.get(k) for k in ("id", "page_id", "psid", "updated_time")} for c in convs]
    msg_rows = [
        {
            "id": m["id"],
            "conversation_id": m["conversation_id"],
            "from_id": (orjson.loads(m["from"]) or {}).get("id") if m.get("from") else None,
            "text": m.get("message"),
            "created_time": m.get("created_time"),
        }
        for m in msgs
    ]
    with postgres.engine().begin() as conn:
        conv_result = bulk_upsert(conn, schema.conversations, conv_rows)
        linked = link_conversations_to_customers(conn)
        msg_result = bulk_upsert(conn, schema.messages, msg_rows)
        marks = _advance(
            conn, "conversations", _newest(convs, "page_id", "updated_time"), "updated_time"
        )
    yield _upsert_result(
        "conversations",
        conv_result,
        linked_to_customers=linked,
        watermark=dg.MetadataValue.json(marks),
    )
    yield _upsert_result("messages", msg_result)
