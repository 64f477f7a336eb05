"""The analyst dashboard in a real headless Chromium, against a live API with demo data: every
chart drawn from the data, tiles equal to summary.json, the STALE banner when the API says so,
a clear message for a refused key, the key kept out of URLs and localStorage, and no request
beyond 127.0.0.1."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text

from crm_pipeline_tests.api.browser.conftest import Dashboard, Tab
from crm_pipeline_tests.api.conftest import issue_key, wait_for_changes

CHARTS = (
    "chart-revenue-by-month",
    "chart-spend-leads-by-day",
    "chart-cost-per-lead",
    "chart-customers-by-tier",
)
KEY_ITEM = "crm-pipeline.dashboard.api-key"

# What each chart holds, read from the page's Chart.js instances.
_CHART_DATA = """ids => Object.fromEntries(ids.map(id => {
  const chart = Chart.getChart(id);
  return [id, chart ? {labels: chart.data.labels, data: chart.data.datasets.map(d => d.data)}
                    : null];
}))"""
# How many pixels of a canvas are painted (not fully transparent).
_PAINTED = """id => {
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
  return {painted, width: canvas.width, height: canvas.height};
}"""


def decimal_text(value, places: int) -> str:
    """As the page formats numbers: half away from zero, thousands separators, or n/a."""
    if value is None:
        return "n/a"
    exact = Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{exact:,.{places}f}"


def money_text(value, currency: str | None) -> str:
    amount = decimal_text(value, 2)
    return f"{amount} {currency}" if value is not None and currency else amount


def expected_tiles(summary: dict) -> dict[str, str]:
    revenue, roas = summary["revenue"], summary["roas"]["roas"]
    return {
        "revenue": money_text(revenue["total"], revenue["currency"]),
        "last-30-days": money_text(revenue["last_30_days"], revenue["currency"]),
        "aov": money_text(revenue["average_order_value"], revenue["currency"]),
        "roas": "n/a" if roas is None else decimal_text(roas, 2) + "x",
        "cost-per-lead": decimal_text(summary["leads"]["cost_per_lead"]["total"], 2),
    }


def expected_charts(summary: dict, insights: dict) -> dict[str, dict]:
    months = sorted({m["month"] for m in summary["revenue"]["by_month"]})
    revenue = {m["month"]: float(m["revenue"]) for m in summary["revenue"]["by_month"]}
    spend = {d["date"]: float(d["spend"]) for d in insights["by_day"]}
    leads = {d["date"]: d["leads"] for d in summary["leads"]["by_day"]}
    days = sorted(spend.keys() | leads.keys())
    campaigns = [c for c in summary["ad_spend"]["by_campaign"] if c["cost_per_lead"] is not None]
    tiers = summary["customers"]["by_tier"]
    return {
        "chart-revenue-by-month": {"labels": months, "data": [[revenue[m] for m in months]]},
        "chart-spend-leads-by-day": {
            "labels": days,
            "data": [[spend.get(d, 0) for d in days], [leads.get(d, 0) for d in days]],
        },
        "chart-cost-per-lead": {
            "labels": [c["campaign_name"] or c["campaign_id"] for c in campaigns],
            "data": [[float(c["cost_per_lead"]) for c in campaigns]],
        },
        "chart-customers-by-tier": {
            "labels": [t["tier"] for t in tiers],
            "data": [[t["customers"] for t in tiers]],
        },
    }


def cache_file(dash: Dashboard, name: str) -> dict:
    path = dash.api.cache_dir / name
    return json.loads(path.read_bytes(), parse_float=Decimal)


def enter_key(tab: Tab, key: str, state: str = "ready") -> None:
    """Type `key` into the page's key form and wait for the page to reach `state`."""
    tab.page.fill("#api-key", key)
    tab.page.click("#key-form button[type=submit]")
    # A selector, not wait_for_function: the page's CSP forbids the eval that one needs.
    tab.page.wait_for_selector(f"body[data-state={state}]", state="attached")


def open_dashboard(tab: Tab, dash: Dashboard) -> None:
    tab.page.goto(dash.url)
    tab.page.wait_for_selector("body[data-state=needs-key]", state="attached")


def test_the_dashboard_draws_every_chart_and_the_summarys_figures(tab, dashboard):
    open_dashboard(tab, dashboard)
    enter_key(tab, dashboard.key)
    page = tab.page
    summary = cache_file(dashboard, "analytics/summary.json")
    insights = cache_file(dashboard, "marketing/insights.json")
    assert page.text_content("#generated-at") == summary["generated_at"]  # the file on disk
    assert page.text_content("#insights-generated-at") == insights["generated_at"]
    assert summary["roas"]["roas"] is not None  # the data exercises every tile
    assert summary["leads"]["cost_per_lead"]["total"] is not None

    for kpi, expected in expected_tiles(summary).items():
        assert page.text_content(f'[data-kpi="{kpi}"] .kpi-value') == expected, kpi

    assert page.evaluate(_CHART_DATA, list(CHARTS)) == expected_charts(summary, insights)
    for chart in CHARTS:
        canvas = page.evaluate(_PAINTED, chart)
        assert canvas["width"] > 100 and canvas["height"] > 100, (chart, canvas)
        assert canvas["painted"] > 500, (chart, canvas)  # drawn, not an empty canvas
        assert page.is_visible(f"#{chart}")

    assert page.is_hidden("#stale-banner")
    assert page.is_hidden("#message")
    assert "X-Cache: " in page.text_content("#freshness")

    # The key: in this tab's sessionStorage, sent only as a header, never in a URL.
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") == dashboard.key
    assert page.evaluate("localStorage.length") == 0
    api_calls = [r for r in tab.requests if "/api/" in r.url]
    assert {r.url.removeprefix(dashboard.api.url) for r in api_calls} == {
        "/api/analytics/summary",
        "/api/marketing/insights",
    }
    for request in api_calls:
        assert request.all_headers()["authorization"] == f"Bearer {dashboard.key}"
    assert all(dashboard.key not in r.url for r in tab.requests)
    assert dashboard.key not in page.url
    assert tab.foreign == []
    assert all(r.url.startswith(dashboard.api.url) for r in tab.requests)
    assert tab.errors == []  # no script error, no CSP violation


def test_the_stale_banner_shows_when_the_api_serves_stale_data(tab, dashboard, clean_db):
    open_dashboard(tab, dashboard)
    enter_key(tab, dashboard.key)
    page = tab.page
    assert page.is_hidden("#stale-banner")
    generated = page.text_content("#generated-at")

    # A write the summary reflects, made outside the API: the summary file is now behind.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders (customer_id, amount, currency, status) "
                "SELECT min(id), 99.00, 'USD', 'paid' FROM customers"
            )
        )
    wait_for_changes(dashboard.api, clean_db)
    page.click("#reload")
    page.wait_for_selector("#stale-banner", state="visible")
    banner = page.text_content("#stale-banner")
    assert banner.startswith("STALE:"), banner
    assert f"api/analytics/summary, generated at {generated}" in banner
    assert "marketing/insights" not in banner  # that file does not read orders: still current
    assert "X-Cache: STALE" in page.text_content("#summary-cache")
    assert tab.errors == []


def test_a_refused_key_gets_a_clear_message_and_another_try(tab, dashboard, database_url):
    page = tab.page
    open_dashboard(tab, dashboard)
    enter_key(tab, "crm_not-a-real-key", state="refused")
    message = page.text_content("#message")
    assert "The API refused this key (401 Unauthorized)" in message
    assert "The API key is unknown or revoked." in message  # the API's own problem detail
    assert page.is_visible("#message") and page.is_visible("#key-form")
    assert page.is_hidden("#content")
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None  # forgotten

    personal_only = issue_key(database_url, "customers:read")
    enter_key(tab, personal_only, state="refused")
    assert "lacks the analytics:read scope (403 Forbidden)" in page.text_content("#message")
    assert page.is_visible("#key-form")

    enter_key(tab, dashboard.key)
    assert page.is_hidden("#message") and page.is_visible("#content")
    assert tab.foreign == []
    # The browser logs each refused fetch; nothing else went wrong.
    assert [e for e in tab.errors if "status of 40" not in e] == []
