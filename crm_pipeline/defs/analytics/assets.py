"""The analytics summary: KPIs pre-computed for analysts and the UI."""

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from crm_pipeline.cache import registry
from crm_pipeline.cache.charts import summary_charts
from crm_pipeline.cache.rebuild import rebuild_file
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION
from crm_pipeline.defs import groups
from crm_pipeline.defs.cache.assets import cache_asset
from crm_pipeline.defs.cache.publish import chart_metadata, rebuilt_metadata
from crm_pipeline.defs.resources import PostgresResource, StorageResource

__all__ = ["analytics_summary", "summary_markdown"]


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


@cache_asset(registry.ANALYTICS_SUMMARY, group_name=groups.ANALYTICS, owners=["team:analytics"])
def analytics_summary(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Recompute the KPIs, validate them against the schema and write summary.json atomically."""
    rebuilt = rebuild_file(postgres.engine(), storage.cache_store(), registry.ANALYTICS_SUMMARY)
    summary = rebuilt.payload
    tables = {name: dg.MetadataValue.md(md) for name, md in summary_markdown(summary).items()}
    return dg.MaterializeResult(
        metadata=rebuilt_metadata(
            rebuilt,
            customers=summary["customers"]["total"],
            orders=summary["revenue"]["orders"],
            ad_spend_total=float(summary["ad_spend"]["total"]),
            schema_version=SUMMARY_SCHEMA_VERSION,
            **tables,
            # Drawn from the document just written, not a second query: they show what it holds.
            **chart_metadata(summary_charts(summary)),
        )
    )
