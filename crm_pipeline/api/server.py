"""Running the API under uvicorn (`crm-pipeline serve`).

The stack is chosen explicitly, not by uvicorn's "auto": httptools (a C HTTP/1.1 parser) and
uvloop (a libuv event loop). Both are dependencies, so a missing one fails at startup instead of
silently serving on the slower pure-Python h11 and asyncio loop.

Connection hygiene, so slow or idle clients cannot hold the server's connections:

- idle keep-alive connections close after uvicorn's `timeout_keep_alive` (5 s);
- a request head (request line and headers) must arrive within `CRM_API_HEADER_TIMEOUT_SECONDS`
  of the connection opening or of its first byte; uvicorn has no such timeout, so a client that
  sends half its headers, or nothing at all, would otherwise keep the connection forever;
- a stalled body gets a 408 from the body middleware (`limits.py`);
- above `CRM_API_LIMIT_CONCURRENCY` connections or requests in flight, a request gets an
  immediate 503 instead of queueing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from crm_pipeline.api.problems import PROBLEM_JSON
from crm_pipeline.config import ApiSettings
from crm_pipeline.logs import configure_logging, redact

DEFAULT_HEADER_TIMEOUT_SECONDS = ApiSettings().header_timeout_seconds
HTTP_PROTOCOL = "httptools"
EVENT_LOOP = "uvloop"


class RedactQuerySecrets(logging.Filter):
    """Mask secret query parameters (the webhook verify token) in uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    """Attach the redaction filter to uvicorn's access and error loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(RedactQuerySecrets())


def _request_timeout_response() -> bytes:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Request timeout",
            "status": 408,
            "detail": "The request headers did not arrive in time.",
        }
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _HeaderTimeout:
    """Mixin for uvicorn's HTTP/1.1 protocols: close a connection whose request head is late.

    The clock starts when the connection opens, or when the first byte of a later request on a
    kept-alive connection arrives (until then uvicorn's keep-alive timeout applies), and stops
    when the head is complete: both protocols then start a new request cycle (`self.cycle`).
    A client that sent part of a head gets a 408; one that sent nothing is just closed.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    _timeout_response = _request_timeout_response()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not cycle:  # a head is complete: the request's own time starts
            self._stop_head_timer()
        elif cycle is None or cycle.response_complete:  # between requests: a head is arriving
            self._head_started = True
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_started = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:  # closed or upgraded
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its body has its own timeout
        if self._head_started:
            transport.write(self._timeout_response)
        transport.close()


def http_protocol(
    http: str | type = HTTP_PROTOCOL, header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS
) -> type:
    """uvicorn's HTTP protocol class `http` (a name or a class) with the request-head timeout."""
    base = import_from_string(HTTP_PROTOCOLS.get(http, http)) if isinstance(http, str) else http
    return type(
        f"{base.__name__}WithHeaderTimeout",
        (_HeaderTimeout, base),
        {"header_timeout": header_timeout},
    )


def _api_settings(app) -> ApiSettings:
    # `create_app()` keeps its Settings on the app; anything else gets the defaults.
    settings = getattr(getattr(app, "state", None), "settings", None)
    return getattr(settings, "api", None) or ApiSettings()


def build_server(
    app,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    header_timeout: float | None = None,
    **options: Any,
) -> uvicorn.Server:
    """A uvicorn Server for `app` with secret-safe logging and connection limits (tests run it
    in a thread). The header timeout and concurrency limit come from the app's settings
    (`CRM_API_HEADER_TIMEOUT_SECONDS`, `CRM_API_LIMIT_CONCURRENCY`) unless given here;
    `options` go to `uvicorn.Config`, where `http` may name another protocol (default
    httptools) and `loop` another event loop (default uvloop)."""
    api = _api_settings(app)
    options["http"] = http_protocol(
        options.get("http", HTTP_PROTOCOL), header_timeout or api.header_timeout_seconds
    )
    options.setdefault("loop", EVENT_LOOP)
    options.setdefault("limit_concurrency", api.limit_concurrency)
    config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=False, server_header=False, **options
    )
    server = uvicorn.Server(config)
    install_log_redaction()
    return server


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Run the API in the foreground until interrupted."""
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.hosts import allowed_hosts_for
    from crm_pipeline.config import load_settings

    settings = load_settings()
    allowed = allowed_hosts_for(host, settings.api.allowed_hosts)  # refuses an open bind
    # With JSON logs uvicorn keeps its hands off logging, so its records reach our formatter.
    json_logs = configure_logging(default_level=log_level) == "json"
    options = {"log_config": None} if json_logs else {}
    app = create_app(settings, allowed_hosts=allowed)
    server = build_server(app, host, port, log_level=log_level, **options)
    # uvicorn configures its loggers in Config.__init__ (done above), so the filter stays.
    server.run()
