"""A real headless Chromium (Debian's, `.ci/install-browser`) driven by Playwright, and an API
on a database with the demo CRM data and some ad insights.

Playwright starts the system browser (`executable_path`): nothing downloads a browser build.
Every page request is routed through a guard that lets only the API under test through and
records anything else, so a test can assert that no request left 127.0.0.1.
On CI (`CI=true`) a missing or unstartable browser is a failure, never a skip.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, insert

from crm_pipeline.db import schema
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline_tests.api.conftest import LiveApi, issue_key

CHROMIUM = "/usr/bin/chromium"  # Debian's package, as .ci/install-browser installs it
ON_CI = os.environ.get("CI", "").strip().lower() in ("1", "true")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (install it with .ci/install-browser)")


@pytest.fixture(scope="package")
def chromium() -> Iterator[object]:
    """One headless Chromium for the browser tests (a context per test keeps tests apart).

    Stopped when they are done: Playwright's sync API keeps an event loop running in the main
    thread, and every Dagster run in this process afterwards would fail to close its own loop
    ("coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited")."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM}")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    except Error as exc:
        playwright.stop()
        _unavailable(f"Chromium at {CHROMIUM} did not start: {exc}")
    yield browser
    browser.close()
    playwright.stop()


@dataclass
class Tab:
    """A page in a fresh browser context, with what it asked for and what it complained of."""

    page: object
    requests: list[object] = field(default_factory=list)  # every request the page made
    foreign: list[str] = field(default_factory=list)  # URLs not on loopback (aborted)
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.fixture
def tab(chromium) -> Iterator[Tab]:
    """A new page; requests to anything but loopback are aborted and recorded."""
    context = chromium.new_context(service_workers="block")
    page = context.new_page()
    tab = Tab(page)

    def guard(route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            tab.foreign.append(url)
            route.abort()

    context.route("**/*", guard)
    page.on("request", lambda request: tab.requests.append(request))
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    page.set_default_timeout(15_000)
    yield tab
    context.close()


# --- data ------------------------------------------------------------------------------------

CAMPAIGNS = (("c-101", "Spring sale"), ("c-102", "Retargeting"), ("c-103", None))


def seed_marketing(engine: Engine, days: int = 10) -> None:
    """Campaigns with ten days of insights (spend, Meta leads), CRM leads over the same days,
    and early leads that attribute some demo customers to the campaigns (for ROAS)."""
    today = dt.datetime.now(dt.UTC).date()
    insights, leads = [], []
    for n, (campaign, _) in enumerate(CAMPAIGNS):
        for back in range(days):
            insights.append(
                {
                    "account_id": "1001",
                    "campaign_id": campaign,
                    "adset_id": f"as-{n}",
                    "ad_id": f"ad-{n}",
                    "date": today - dt.timedelta(days=back),
                    "impressions": 1000 + 37 * back + n,
                    "clicks": 40 + back,
                    "spend": Decimal("12.35") * (n + 1) + back,
                    "leads": (back + n) % 4 + 1,
                }
            )
    now = dt.datetime.now(dt.UTC)
    for i in range(days):
        leads.append(_lead(f"L-{i}", now - dt.timedelta(days=i), form_id="f-1"))
    with engine.begin() as conn:
        customers = [r.id for r in conn.execute(schema.customers.select().limit(6))]
        for i, customer in enumerate(customers):
            early = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)  # before every demo order
            leads.append(
                _lead(f"L-early-{i}", early, customer_id=customer, campaign_id=CAMPAIGNS[i % 2][0])
            )
        conn.execute(
            insert(schema.campaigns),
            [{"id": c, "account_id": "1001", "name": name} for c, name in CAMPAIGNS],
        )
        conn.execute(insert(schema.ad_insights_daily), insights)
        conn.execute(insert(schema.leads), leads)


def _lead(lead_id: str, created: dt.datetime, **values) -> dict:
    # One key set for every row of the multi-row insert.
    return {"form_id": None, "customer_id": None, "campaign_id": None, **values} | {
        "id": lead_id,
        "created_time": created,
    }


@dataclass
class Dashboard:
    """An API with demo data, and an `analytics:read` key for it."""

    api: LiveApi
    key: str

    @property
    def url(self) -> str:
        return self.api.url + "/dashboard"


@pytest.fixture
def dashboard(clean_db, database_url, start_api) -> Dashboard:
    seed_demo_crm(clean_db)
    seed_marketing(clean_db)
    api = start_api(database_url)
    return Dashboard(api, issue_key(database_url, "analytics:read", name="analyst"))
