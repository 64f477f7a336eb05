"""The analyst dashboard: `GET /dashboard`, a static page that draws the KPI summary and the ad
insights in the browser.

The page and its code hold no customer data, so they need no key. The page asks for an
`analytics:read` API key, keeps it in the tab's sessionStorage only, and sends it as
`Authorization: Bearer` to `/api/analytics/summary` and `/api/marketing/insights`, like any
other client (the cache-first reads, their freshness headers and their scope checks apply).
Its chart library is vendored in the package (`static/vendor/README.md`), so it needs no
internet access and loads nothing from another origin; a strict Content-Security-Policy
(scripts from this origin only, no inline script) holds it to that.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crm_pipeline.api.static_assets import AssetDir, content_security_policy

CSP = content_security_policy()
HEADERS = {"Content-Security-Policy": CSP}

PAGE = AssetDir({"index.html": "dashboard/index.html"})
ASSETS = AssetDir(
    {
        "dashboard.js": "dashboard/dashboard.js",
        "dashboard.css": "dashboard/dashboard.css",
        "chart.umd.min.js": "vendor/chart.js/chart.umd.min.js",
    }
)

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard_page(request: Request) -> Response:
    """The dashboard page (no data in it: the page fetches the data with the user's key)."""
    return PAGE.response(request, "index.html", HEADERS)


@router.get("/dashboard/assets/{name}")
async def dashboard_asset(request: Request, name: str) -> Response:
    """The dashboard's script, stylesheet and the vendored chart library."""
    return ASSETS.response(request, name, HEADERS)
