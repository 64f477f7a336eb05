"""Trusted `Host` headers: a request for any other name gets 400 before routing.

Without this check a web page can reach an API bound to localhost through DNS rebinding (its
own name resolving to 127.0.0.1): the browser then sends that name as `Host`. Starlette's
TrustedHostMiddleware is not used because it splits `[::1]:8000` at the first colon.
"""

from __future__ import annotations

import ipaddress

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from crm_pipeline.api.problems import PROBLEM_JSON
from crm_pipeline.config import ConfigError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(bind_host: str) -> bool:
    """True when `bind_host` (what the server listens on) is only reachable from this machine."""
    if bind_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind_host: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """`CRM_API_ALLOWED_HOSTS` when set; the loopback names when bound to loopback; else refuse."""
    if configured:
        return configured
    if is_loopback(bind_host):
        return LOOPBACK_HOSTS
    raise ConfigError(
        f"the API listens on {bind_host}, which is reachable from other machines: set "
        "CRM_API_ALLOWED_HOSTS to the names clients use (comma-separated, e.g. "
        "crm.example.com,*.internal.example.com)"
    )


def host_name(header: str) -> str | None:
    """The name part of a Host header, lower-cased (`[::1]:8000` gives `[::1]`)."""
    header = header.strip().lower()
    if not header:
        return None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[: end + 1], header[end + 1 :]
    else:
        name, _, port = header.partition(":")
        rest = f":{port}" if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """Exact names, `*.domain` for its subdomains, or `*` for any."""
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class TrustedHosts:
    """ASGI middleware: 400 problem+json unless the Host header names an allowed host."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = tuple(h.strip().lower() for h in allowed if h.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"")
        name = host_name(header.decode("latin-1"))
        if name is not None and host_allowed(name, self.allowed):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Invalid host",
                "status": 400,
                "detail": "The Host header does not name this service.",
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
