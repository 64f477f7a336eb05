"""The dashboard's and the docs' static answers over HTTP: no key needed, a strict
Content-Security-Policy, nothing from another origin, vendored files exactly as recorded.
(The pages themselves are exercised in a real browser: crm_pipeline_tests/api/browser/.)"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from crm_pipeline.api import dashboard, docs_page

STATIC = Path(dashboard.__file__).parent / "static"
VENDOR_NOTE = STATIC / "vendor" / "README.md"
_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def _csp_directives(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d}


@pytest.mark.parametrize("path", ["/dashboard", "/docs"])
def test_the_pages_need_no_key_and_carry_a_strict_csp(api, clean_db, path):
    with api.client(key=None) as anonymous:
        page = anonymous.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    csp = _csp_directives(page.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"] and csp["base-uri"] == ["'none'"]
    assert csp["script-src"][0] == "'self'"
    sources = [s for values in csp.values() for s in values]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in sources
    assert not any(s.startswith(("http", "//", "*")) or s.endswith(":*") for s in sources)
    assert not _EXTERNAL.search(page.text), "a URL on another origin"
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    if path == "/dashboard":
        assert inline == [] and csp["script-src"] == ["'self'"]
        assert csp["style-src"] == ["'self'"]
    else:  # Swagger UI's start-up call, allowed by its hash and nothing else
        assert len(inline) == 1 and len(csp["script-src"]) == 2
        assert csp["script-src"][1].startswith("'sha256-")


def test_assets_are_served_from_the_package_with_etags(api, clean_db):
    with api.client(key=None) as anonymous:
        for url, media_type in (
            ("/dashboard/assets/dashboard.js", "text/javascript; charset=utf-8"),
            ("/dashboard/assets/dashboard.css", "text/css; charset=utf-8"),
            ("/dashboard/assets/chart.umd.min.js", "text/javascript; charset=utf-8"),
            ("/docs/assets/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
            ("/docs/assets/swagger-ui.css", "text/css; charset=utf-8"),
            ("/docs/assets/favicon-32x32.png", "image/png"),
        ):
            first = anonymous.get(url)
            assert first.status_code == 200, url
            assert first.headers["content-type"] == media_type
            assert first.headers["x-content-type-options"] == "nosniff"
            etag = first.headers["etag"]
            again = anonymous.get(url, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
        for url in (
            "/dashboard/assets/index.html",
            "/dashboard/assets/..%2f..%2fapp.py",
            "/docs/assets/swagger-ui.js",
            "/redoc",
        ):
            assert anonymous.get(url).status_code == 404, url
    paths = api.app.openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/dashboard", "/docs"))]


def test_vendored_files_are_the_ones_recorded_with_their_licenses():
    note = VENDOR_NOTE.read_text()
    recorded = dict(
        re.findall(r"^\| `([^`]+)` \| `package/[^`]+` \| `([0-9a-f]{64})` \|$", note, re.M)
    )
    served = {
        path.removeprefix("vendor/")
        for assets in (dashboard.ASSETS, docs_page.ASSETS)
        for path in assets.files.values()
        if path.startswith("vendor/")
    }
    assert set(recorded) == served
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (STATIC / "vendor" / "chart.js" / "LICENSE.md").read_text()
    assert "Apache License" in (STATIC / "vendor" / "swagger-ui" / "LICENSE").read_text()
    assert (
        "Chart.js v4.6.1" in (STATIC / "vendor" / "chart.js" / "chart.umd.min.js").read_text()[:100]
    )
