"""Charts in the materialisations' metadata: PNGs drawn from summary.json and insights.json,
deterministic, small, and present even when there is nothing to draw."""

import base64
import datetime as dt
import re
from decimal import Decimal

import dagster as dg
import pytest

from crm_pipeline.cache import charts
from crm_pipeline.cachefile import read_json
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline_tests.analytics.summary_data import TODAY

MAX_PNG_BYTES = 20_000  # a few KB each: the metadata of every materialisation carries them
SUMMARY_CHARTS = {
    "chart_revenue_by_month",
    "chart_ad_spend_by_day",
    "chart_leads_by_day",
    "chart_cost_per_lead_by_campaign",
    "chart_customers_by_tier",
}
INSIGHTS_CHARTS = {"chart_spend_leads_by_day", "chart_spend_leads_by_campaign"}
DATA_URI = re.compile(r"^!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)$")
DAYS = [(dt.date(2026, 11, 1) + dt.timedelta(days=i)).isoformat() for i in range(30)]


def _summary(empty: bool = False) -> dict:
    """The parts of a summary payload the charts read (Decimal money, as the builder gives)."""
    months = [(2025, 11), (2025, 12), *((2026, k) for k in range(1, 13))]  # more than 12
    by_month = [
        {"month": f"{y}-{m:02d}", "currency": c, "revenue": Decimal(f"{m}99.5")}
        for y, m in months
        for c in ("EUR", "USD")
    ]
    by_campaign = [
        {
            "campaign_id": f"c{i}",
            "campaign_name": f"A rather long campaign name {i}",
            "cost_per_lead": Decimal("3.25") * i if i % 3 else None,
        }
        for i in range(40)
    ]
    tiers = [{"tier": "a", "customers": 3}, {"tier": "b", "customers": 9}]
    return {
        "revenue": {"by_month": [] if empty else by_month},
        "leads": {
            "by_day": [{"date": d, "leads": 0 if empty else i % 5} for i, d in enumerate(DAYS)]
        },
        "ad_spend": {
            "by_campaign": [] if empty else by_campaign,
            "by_day": [
                {
                    "date": d,
                    "spend": Decimal(0 if empty else 10 + i),
                    "leads": 0 if empty else i % 4,
                }
                for i, d in enumerate(DAYS)
            ],
        },
        "customers": {"by_tier": [] if empty else tiers},
    }


def _insights(empty: bool = False) -> dict:
    if empty:
        return {"by_day": [], "by_campaign": []}
    return {
        "by_day": [
            {"date": d, "spend": Decimal(i) / 3, "leads": i % 7} for i, d in enumerate(DAYS)
        ],
        "by_campaign": [
            {"campaign_id": f"c{i}", "campaign_name": None, "spend": Decimal(900 - i), "leads": i}
            for i in range(40)
        ],
    }


def _assert_pngs(rendered: dict[str, bytes], keys: set[str]) -> None:
    assert set(rendered) == keys
    for key, png in rendered.items():
        assert png.startswith(charts.PNG_SIGNATURE), key
        assert len(png) <= MAX_PNG_BYTES, (key, len(png))
        assert b"tIME" not in png and b"Software" not in png, key  # nothing run-dependent


@pytest.mark.parametrize("empty", [False, True], ids=["data", "empty"])
def test_each_chart_is_a_small_deterministic_png(empty):
    first = {**charts.summary_charts(_summary(empty)), **charts.insights_charts(_insights(empty))}
    _assert_pngs(first, SUMMARY_CHARTS | INSIGHTS_CHARTS)
    again = {**charts.summary_charts(_summary(empty)), **charts.insights_charts(_insights(empty))}
    assert again == first  # byte-identical


def test_a_chart_shows_its_data():
    # A different document draws a different picture (the charts are not all placeholders).
    full, empty = charts.summary_charts(_summary()), charts.summary_charts(_summary(empty=True))
    assert all(full[key] != empty[key] for key in SUMMARY_CHARTS)
    busy, quiet = charts.insights_charts(_insights()), charts.insights_charts(_insights(True))
    assert all(busy[key] != quiet[key] for key in INSIGHTS_CHARTS)


def test_markdown_embeds_the_png_as_a_data_uri():
    png = charts.render_png("t", lambda ax: ax.bar([0], [1]))
    match = DATA_URI.match(charts.chart_markdown("revenue by month", png))
    assert match and base64.b64decode(match.group(1)) == png


def _chart_pngs(result: dg.ExecuteInProcessResult, node: str, keys: set[str]) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    metadata = materialization.metadata
    assert keys <= metadata.keys(), node
    pngs = {}
    for key in keys:
        assert isinstance(metadata[key], dg.MarkdownMetadataValue), key
        match = DATA_URI.match(metadata[key].value)
        assert match, key
        pngs[key] = base64.b64decode(match.group(1))
    _assert_pngs(pngs, keys)
    return pngs


def test_materialisations_carry_the_charts_of_the_written_documents(seeded, resources, dirs):
    # The seeded insights are around a fixed day: look back far enough to cover them.
    lookback = (dt.datetime.now(dt.UTC).date() - TODAY).days + 30
    config = {"ops": {"marketing_insights_cache": {"config": {"lookback_days": lookback}}}}
    assets = [marketing_insights_cache, analytics_summary]
    result = dg.materialize(assets, resources=resources, run_config=config)
    assert result.success
    summary = _chart_pngs(result, "analytics_summary", SUMMARY_CHARTS)
    insights = _chart_pngs(result, "marketing_insights_cache", INSIGHTS_CHARTS)
    # Drawn from the very documents written (read back here, money then as JSON numbers).
    written = read_json(dirs["cache"] / "analytics" / "summary.json")
    assert charts.summary_charts(written) == summary
    written = read_json(dirs["cache"] / "marketing" / "insights.json")
    assert written["by_campaign"] and all("leads" in c for c in written["by_campaign"])
    assert charts.insights_charts(written) == insights


def test_an_empty_database_gives_placeholder_charts(clean_db, resources):
    result = dg.materialize([marketing_insights_cache, analytics_summary], resources=resources)
    assert result.success
    empty = {**charts.summary_charts(_summary(True)), **charts.insights_charts(_insights(True))}
    assert _chart_pngs(result, "analytics_summary", SUMMARY_CHARTS) == {
        k: empty[k] for k in SUMMARY_CHARTS
    }
    assert _chart_pngs(result, "marketing_insights_cache", INSIGHTS_CHARTS) == {
        k: empty[k] for k in INSIGHTS_CHARTS
    }
