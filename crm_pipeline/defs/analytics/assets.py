"""The analytics summary: KPIs pre-computed for analysts and the UI."""

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
import jsonschema
import orjson
from sqlalchemy import Connection

from crm_pipeline.cachefile import dumps, envelope
from crm_pipeline.db.changelog import reflected_watermark
from crm_pipeline.defs.analytics.kpis import (
    SUMMARY_SCHEMA_VERSION,
    compute_summary,
    summary_json_schema,
)
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.cache.publish import publish_from_snapshot
from crm_pipeline.defs.crm.assets import ad_insights_daily, customers, leads, orders
from crm_pipeline.defs.resources import PostgresResource, StorageResource

__all__ = ["SUMMARY_FILE", "SUMMARY_SCHEMA_VERSION", "SummarySchemaError", "analytics_summary"]

SUMMARY_FILE = "analytics/summary.json"
_MAX_REPORTED_ERRORS = 10


class SummarySchemaError(ValueError):
    """summary.json does not match docs/schemas/summary.schema.json; nothing was written."""


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = summary_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_summary(document: dict[str, Any]) -> None:
    """Raise SummarySchemaError unless `document`, as it would be written, matches the schema.

    The check runs on the serialised JSON, not on the Python objects, so it sees exactly what a
    reader will.
    """
    errors = sorted(
        _validator().iter_errors(orjson.loads(dumps(document))),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        shown = "\n".join(
            f"  - at {e.json_path}: {e.message[:300]}" for e in errors[:_MAX_REPORTED_ERRORS]
        )
        more = len(errors) - _MAX_REPORTED_ERRORS
        raise SummarySchemaError(
            f"analytics summary does not match its schema (schema_version "
            f"{SUMMARY_SCHEMA_VERSION}, docs/schemas/summary.schema.json); the previous "
            f"summary.json was left in place. {len(errors)} error(s):\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )


def build_validated_summary(conn: Connection, today: dt.date) -> dict[str, Any]:
    """Compute the KPIs and validate the document they make before anything is written.

    The watermark comes from the same snapshot, so the envelope checked here is the one
    `publish_from_snapshot` writes (only `generated_at` is stamped again).
    """
    payload = compute_summary(conn, today)
    validate_summary(
        envelope(
            payload,
            watermark=reflected_watermark(conn),
            schema_version=SUMMARY_SCHEMA_VERSION,
        )
    )
    return payload


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any], max_rows: int = 15) -> dict[str, str]:
    """Markdown tables of the main KPIs, for the materialisation's metadata."""
    revenue, spend, leads, roas = (
        summary["revenue"],
        summary["ad_spend"],
        summary["leads"],
        summary["roas"],
    )
    window = summary["window_30_days"]
    kpis = _table(
        ["KPI", "all time", f"last 30 days ({window['first_day']} – {window['last_day']})"],
        [
            [f"revenue ({revenue['currency'] or 'see by currency'})", revenue["total"],
             revenue["last_30_days"]],
            ["revenue orders", revenue["orders"], revenue["orders_last_30_days"]],
            ["average order value", revenue["average_order_value"], None],
            ["customers", summary["customers"]["total"], None],
            ["ad spend", spend["total"], spend["last_30_days"]],
            ["leads (CRM)", leads["total"], leads["last_30_days"]],
            ["leads (Meta-reported)", leads["meta_reported"]["total"],
             leads["meta_reported"]["last_30_days"]],
            ["cost per lead", leads["cost_per_lead"]["total"],
             leads["cost_per_lead"]["last_30_days"]],
            ["ROAS (first-touch, blended)", roas["roas"], None],
        ],
    )  # fmt: skip
    tiers = _table(
        ["tier", "customers", "revenue"],
        [[t["tier"], t["customers"], t["revenue"]] for t in summary["customers"]["by_tier"]],
    )
    campaigns = _table(
        ["campaign", "spend", "impressions", "clicks", "leads", "cost per lead", "ROAS"],
        [
            [c["campaign_name"] or c["campaign_id"], c["spend"], c["impressions"], c["clicks"],
             c["leads"], c["cost_per_lead"], r["roas"] if (r := _roas_of(roas, c)) else None]
            for c in spend["by_campaign"][:max_rows]
        ],
    )  # fmt: skip
    if len(spend["by_campaign"]) > max_rows:
        campaigns += f"\n\n{len(spend['by_campaign']) - max_rows} more in summary.json"
    months = _table(
        ["month", "currency", "revenue", "orders"],
        [[m["month"], m["currency"], m["revenue"], m["orders"]]
         for m in revenue["by_month"][-max_rows:]],
    )  # fmt: skip
    freshness = _table(["source", "newest"], list(summary["freshness"].items()))
    return {
        "kpis": kpis,
        "customers_by_tier": tiers,
        "campaigns": campaigns,
        "revenue_by_month": months,
        "freshness": freshness,
    }


def _roas_of(roas: dict[str, Any], campaign: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (r for r in roas["by_campaign"] if r["campaign_id"] == campaign["campaign_id"]), None
    )


@dg.asset(
    # After the marketing cache, so one run leaves both files built from the same data.
    deps=[ad_insights_daily, customers, orders, leads, "campaigns", marketing_insights_cache],
    group_name="analytics",
    kinds={"json"},
    owners=["team:analytics"],
    description=(
        "cache/analytics/summary.json: revenue, customers by tier, ad spend, leads, cost per "
        "lead, first-touch ROAS and data freshness, computed in SQL from one consistent "
        "snapshot of the source-of-truth database and validated against "
        "docs/schemas/summary.schema.json before it is written."
    ),
)
def analytics_summary(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Recompute the KPIs, validate them against the schema and write summary.json atomically."""
    today = dt.datetime.now(dt.UTC).date()
    published = publish_from_snapshot(
        postgres,
        storage,
        SUMMARY_FILE,
        SUMMARY_SCHEMA_VERSION,
        lambda conn: build_validated_summary(conn, today),
    )
    summary = published.payload
    tables = {name: dg.MetadataValue.md(md) for name, md in summary_markdown(summary).items()}
    return dg.MaterializeResult(
        metadata=published.metadata(
            customers=summary["customers"]["total"],
            orders=summary["revenue"]["orders"],
            ad_spend_total=float(summary["ad_spend"]["total"]),
            schema_version=SUMMARY_SCHEMA_VERSION,
            **tables,
        )
    )
