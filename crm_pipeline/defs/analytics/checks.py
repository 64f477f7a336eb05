"""Checks on the analytics summary's inputs: the KPI rollups equal their source tables."""

import dagster as dg

from crm_pipeline.cache import registry
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.db.rollups import find_drift
from crm_pipeline.defs.resources import PostgresResource

# Differing keys listed per rollup in the check's metadata (all of them are counted).
SAMPLE = 20


@dg.asset_check(
    asset=dg.AssetKey(registry.ANALYTICS_SUMMARY.asset),
    description=(
        "The KPI rollup tables summary.json is computed from equal a recomputation from the "
        "source tables (orders, customers, leads, ads, ad_insights_daily) in one snapshot. On "
        "failure the metadata names each rollup and key that differs; repair with "
        "crm_pipeline.db.rollups.rebuild_rollups (docs/architecture.md)."
    ),
)
def rollups_match_sources(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Recompute every rollup and compare it with the stored rows."""
    with read_snapshot(postgres.engine()) as conn:
        report = find_drift(conn, sample=SAMPLE)
    differing = {table: n for table, n in report.differing.items() if n}
    lines = [drift.describe() for drift in report.samples]
    return dg.AssetCheckResult(
        passed=report.ok,
        description=(
            "every rollup equals its recomputation"
            if report.ok
            else f"{sum(differing.values())} rollup row(s) differ: " + "; ".join(lines[:3])
        ),
        metadata={
            "rollups_checked": len(report.stored_rows),
            "stored_rows": dg.MetadataValue.json(report.stored_rows),
            "differing_keys": dg.MetadataValue.json(differing),
            "differences": dg.MetadataValue.md(
                "\n".join(f"- `{line}`" for line in lines) if lines else "none"
            ),
        },
    )


analytics_checks = [rollups_match_sources]
