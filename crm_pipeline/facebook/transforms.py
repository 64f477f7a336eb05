"""Meta payloads to rows: the raw landing's Arrow tables and the PostgreSQL tables' rows.

Pure functions, no I/O: the Dagster assets read and write, these only reshape. The raw landing
keeps what Meta sent (all strings, nested values as JSON text); the DB rows lift out what the
CRM queries (lead contact fields, lead and purchase counts, purchase value, message senders).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from crm_pipeline.facebook.ids import account_node
from crm_pipeline.facebook.insight_values import (
    PURCHASE_ACTION_TYPES,
    purchase_value,
)

__all__ = [
    "ACCOUNT_TOTALS_COLUMNS",
    "INSIGHTS_COLUMNS",
    "LEAD_ACTION_TYPES",
    "account_total_rows",
    "ad_account_row",
    "conversation_row",
    "flatten_lead",
    "insight_rows",
    "lead_count",
    "message_row",
    "to_arrow",
]

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
    "frequency": "frequency",
    "actions": "actions",
    "action_values": "action_values",
    "conversions": "conversions",
}
# Raw account-level Graph fields -> ad_account_insights_daily columns.
ACCOUNT_TOTALS_COLUMNS = {
    "account_id": "account_id",
    "date_start": "date",
    "spend": "spend",
    "impressions": "impressions",
    "clicks": "clicks",
}
# Meta reports Lead Ads leads under several action types; "lead" is their total when present.
LEAD_ACTION_TYPES = ("lead", "onsite_conversion.lead_grouped", "leadgen_grouped")
_CONVERSATION_COLUMNS = ("id", "page_id", "psid", "updated_time")


# -- the raw landing -------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def to_arrow(rows: Iterable[dict], fields: tuple[str, ...]) -> pa.Table:
    """Rows as an all-string Arrow table with exactly `fields` (unknown fields dropped).

    Complex values (lists, objects) become JSON text; scalars stay the strings Meta sends.
    """
    rows = rows if isinstance(rows, list) else list(rows)
    # Column by column: no dict per row, and Meta's strings pass through untouched.
    columns = [
        pa.array(
            [v if type(v) is str else _text(v) for v in (r.get(name) for r in rows)], pa.string()
        )
        for name in fields
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema([(f, pa.string()) for f in fields]))


# -- database rows ---------------------------------------------------------------------------------


def lead_count(actions_json: str | None) -> int:
    """Leads in one insights row's `actions` (0 when none)."""
    if not actions_json:
        return 0
    by_type = {a.get("action_type"): a.get("value") for a in orjson.loads(actions_json)}
    for action_type in LEAD_ACTION_TYPES:
        if by_type.get(action_type) is not None:
            return int(float(by_type[action_type]))
    return 0


def _action_counts(actions_json: str | None) -> tuple[int, int]:
    """(leads, purchases) of one row's `actions`, as `lead_count` and `purchase_count` count
    them, from one parse."""
    if not actions_json:
        return 0, 0
    by_type = {a.get("action_type"): a.get("value") for a in orjson.loads(actions_json)}
    leads = next((by_type[t] for t in LEAD_ACTION_TYPES if by_type.get(t) is not None), 0)
    purchases = next((by_type[t] for t in PURCHASE_ACTION_TYPES if by_type.get(t) is not None), 0)
    return int(float(leads)), int(Decimal(str(purchases)))


def _with_columns(raw: pa.Table, columns: Iterable[str]) -> pa.Table:
    """`raw` with every one of `columns`; those it lacks are added as all-null strings (a
    file landed before the field was asked for)."""
    for name in columns:
        if name not in raw.column_names:
            raw = raw.append_column(name, pa.nulls(raw.num_rows, pa.string()))
    return raw


def insight_rows(raw: pa.Table) -> pa.Table:
    """Landed insights as `ad_insights_daily` rows: columns renamed, leads and purchases
    counted, the purchase value lifted out of `action_values`.

    Files landed before `frequency`, `action_values` and `conversions` were asked for still
    load: those columns are NULL and purchases 0.
    """
    raw = _with_columns(raw, INSIGHTS_COLUMNS)
    rows = raw.select(list(INSIGHTS_COLUMNS)).rename_columns(list(INSIGHTS_COLUMNS.values()))
    # Each row's actions parsed once for both counts (a month of an agency's ads is 300k rows).
    counted = [_action_counts(a) for a in rows["actions"].to_pylist()]
    values = rows["action_values"].to_pylist()
    return (
        rows.append_column("leads", pa.array([c[0] for c in counted], pa.int64()))
        .append_column("purchases", pa.array([c[1] for c in counted], pa.int64()))
        .append_column(
            # Text, cast by PostgreSQL into numeric: money never passes through a float.
            "purchase_value",
            pa.array([format(purchase_value(v), "f") for v in values], pa.string()),
        )
    )


def account_total_rows(raw: pa.Table) -> pa.Table:
    """Landed account-level insights as `ad_account_insights_daily` rows."""
    rows = raw.select(list(ACCOUNT_TOTALS_COLUMNS))
    return rows.rename_columns(list(ACCOUNT_TOTALS_COLUMNS.values()))


def ad_account_row(raw: dict) -> dict:
    """A landed ad account node as an `ad_accounts` row (keyed on ``act_<digits>``)."""
    return {
        "id": account_node(raw["id"]),
        "name": raw.get("name"),
        "currency": raw.get("currency"),
        "timezone_name": raw.get("timezone_name"),
    }


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


def conversation_row(raw: dict) -> dict:
    """A landed conversation as a `conversations` row (customers are linked in the database)."""
    return {k: raw.get(k) for k in _CONVERSATION_COLUMNS}


def message_row(raw: dict) -> dict:
    """A landed message as a `messages` row: the sender's id lifted out of `from`."""
    sender = (orjson.loads(raw["from"]) or {}).get("id") if raw.get("from") else None
    return {
        "id": raw["id"],
        "conversation_id": raw["conversation_id"],
        "from_id": sender,
        "text": raw.get("message"),
        "created_time": raw.get("created_time"),
    }
