"""Static files served from the package: the dashboard's page and code, and vendored assets.

Only the files named in an `AssetDir` are served (a URL name maps to one package file, so no
path from a request ever reaches the file system). They are read through `importlib.resources`
from the installed package (pyproject's package-data ships `api/static/`), once, on first use.

Every answer carries the browser hardening headers below; the HTML pages add their own
Content-Security-Policy. `Cache-Control: no-cache` with a strong ETag: a browser revalidates
each time (a 304 costs nothing), so a package upgrade is seen at once without versioned URLs.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from fastapi import Request
from fastapi.responses import Response

from crm_pipeline.api.problems import Problem

STATIC_PACKAGE = "crm_pipeline.api"
STATIC_FOLDER = "static"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}

# On every static answer: no MIME sniffing (a file is only ever what its type says), no
# Referer to other origins, and no embedding in another site's frames (clickjacking).
HARDENING_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def content_security_policy(script_src: str = "'self'", style_src: str = "'self'") -> str:
    """A CSP that allows this origin only: no inline script (unless `script_src` names a
    hash), no third-party origin, no form submissions, no framing."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {script_src}",
            f"style-src {style_src}",
            # data: for icons and the SVGs Swagger UI's stylesheet embeds; never a remote image.
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            # Nothing on these pages submits a form: the key form is handled in script, and a
            # form sent by the browser itself (script failed) would put its fields in a URL.
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@dataclass(frozen=True)
class Asset:
    """One static file, read into memory."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        return cls(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def read_package_file(path: str) -> bytes:
    """The bytes of `static/<path>` in the installed package."""
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER, *path.split("/")).read_bytes()


def media_type_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix
    if suffix not in MEDIA_TYPES:
        raise ValueError(f"no media type for static file {path}")
    return MEDIA_TYPES[suffix]


class AssetDir:
    """The static files one route serves: URL name → path under `static/`."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = dict(files)
        self._assets: dict[str, Asset] | None = None
        self._lock = threading.Lock()

    def assets(self) -> dict[str, Asset]:
        """Every file, read on first use (a missing one fails then, loudly)."""
        if self._assets is None:
            with self._lock:
                if self._assets is None:
                    self._assets = {
                        name: Asset.of(read_package_file(path), media_type_of(path))
                        for name, path in self.files.items()
                    }
        return self._assets

    def response(self, request: Request, name: str, headers: dict[str, str]) -> Response:
        """The file named `name` (404 for any other name), or a 304 when the ETag matches."""
        asset = self.assets().get(name)
        if asset is None:
            raise Problem(404, "Not found", "No such file.", headers=HARDENING_HEADERS)
        return asset_response(request, asset, headers)


def asset_response(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    """`asset` with the hardening headers and `headers`; 304 when If-None-Match matches."""
    all_headers = {**HARDENING_HEADERS, **headers, "ETag": asset.etag}
    if_none_match = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=all_headers)
    return Response(asset.body, media_type=asset.media_type, headers=all_headers)
