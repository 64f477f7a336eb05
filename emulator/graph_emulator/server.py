"""A Graph API emulator: a threaded HTTP server on 127.0.0.1 speaking Meta's wire format.

It serves what the pipeline reads (``/vX.Y/act_<id>/insights|campaigns|adsets|ads``, async report
runs, the Page's lead forms, leads, conversations and messages) from :class:`EmulatorData`, with
Meta's cursor paging, string-typed numbers, usage headers and error bodies, so the real
facebook-business SDK can be pointed at it by setting the session's ``GRAPH`` URL. A
:class:`FaultPlan` injects throttling, transient and reduce-data errors, bad tokens, missing
permissions and failing report runs; ``latency_ms`` delays every answer.

Environment (read when the arguments are not given): ``CRM_EMULATOR_FAULTS`` (a JSON fault list,
see :mod:`graph_emulator.faults`) and ``CRM_EMULATOR_LATENCY_MS``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from graph_emulator.ads import AdRoutes
from graph_emulator.call import Call
from graph_emulator.data import EmulatorData
from graph_emulator.faults import FaultPlan
from graph_emulator.page import PageRoutes
from graph_emulator.usage import CallScope, UsageMeter
from graph_emulator.wire import GraphError, error_for_fault

__all__ = ["LATENCY_ENV", "GraphEmulator", "RecordedRequest"]

LATENCY_ENV = "CRM_EMULATOR_LATENCY_MS"
# Meta accepts unversioned paths, but the pipeline must always pin a version, so we refuse them.
_VERSIONED_PATH = re.compile(r"^/(v\d+\.\d+)/(.*)$")
_ACCOUNT_NODE = re.compile(r"^act_\d+$")
_SECRET_PARAMS = frozenset({"access_token", "appsecret_proof"})
_REQUEST_FAULTS = frozenset({"throttle", "transient", "reduce_data", "invalid_token", "permission"})
# Throttles whose estimated_time_to_regain_access Meta reports in X-Business-Use-Case-Usage.
_ETA_CODES = frozenset({4, 17, 613, *range(80000, 80015)})
# The Business Use Case each BUC throttle code belongs to.
_BUC_TYPES = {
    80000: "ads_insights",
    80001: "pages",
    80002: "instagram",
    80003: "custom_audience",
    80004: "ads_management",
    80005: "leadgen",
    80006: "messenger",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request seen by the emulator; secrets (token, appsecret_proof) are never recorded."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)


def _latency_from_env() -> float:
    raw = os.environ.get(LATENCY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LATENCY_ENV} must be a number of milliseconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{LATENCY_ENV} must not be negative, got {raw!r}")
    return value


class GraphEmulator:
    """Serve :class:`EmulatorData` over HTTP in the Graph API wire format.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The server listens on an
    ephemeral port of ``host`` (127.0.0.1 by default) in a daemon thread. ``faults`` defaults to
    the plan in ``CRM_EMULATOR_FAULTS`` and ``latency_ms`` to ``CRM_EMULATOR_LATENCY_MS``; a report
    run completes on its ``async_polls_to_complete``-th status poll.
    """

    def __init__(
        self,
        data: EmulatorData | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expected_token: str | None = None,
        default_limit: int = 25,
        faults: FaultPlan | None = None,
        latency_ms: float | None = None,
        async_polls_to_complete: int = 2,
    ) -> None:
        self.data = data if data is not None else EmulatorData()
        self.host = host
        self.port = port
        self.expected_token = expected_token
        self.default_limit = default_limit
        self.faults = faults if faults is not None else FaultPlan.from_env()
        self.latency_ms = _latency_from_env() if latency_ms is None else float(latency_ms)
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self.usage = UsageMeter()
        self._ads = AdRoutes(self.data, async_polls_to_complete)
        self._page = PageRoutes(self.data)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GraphEmulator:
        """Bind and start serving in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True  # a stuck client must not keep the process alive
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # shutdown() waits for the loop to notice; a short poll keeps stop() (and tests) fast.
            kwargs={"poll_interval": 0.05},
            name=f"graph-emulator-{self.url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call more than once."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> GraphEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use as the SDK session's ``GRAPH``, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("GraphEmulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- knobs and observations ------------------------------------------------------------------

    def set_usage(self, pct: float | None) -> None:
        """Report ``pct`` percent in every usage header from now on (None: default low creep)."""
        self.usage.set_usage(pct)

    @property
    def async_jobs_max_in_flight(self) -> int:
        """Most report runs ever unfinished at once (created, not yet polled to an end state)."""
        return self._ads.max_in_flight

    @property
    def report_runs(self) -> list[dict[str, Any]]:
        """Every report run created so far, in wire form (id, async_status, ...)."""
        return self._ads.runs()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- dispatch --------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, body: bytes = b""
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one request: returns (HTTP status, JSON body, extra headers).

        ``body`` is a form-encoded POST body (the SDK sends POST parameters that way); its
        parameters are merged over the query string's.
        """
        split = urlsplit(raw_path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        with self._lock:
            public = {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
            self._requests.append(RecordedRequest(method, split.path, public))
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)

        fbtrace_id = secrets.token_urlsafe(16)
        scope = self._scope(split.path)
        pct = self.usage.count_call()
        headers = {"x-fb-trace-id": fbtrace_id}
        eta = 0
        try:
            fault = self.faults.take(_REQUEST_FAULTS, method, split.path)
            if fault is not None:
                raise error_for_fault(fault)
            version, answer = self._route(method, split.path, params)
            headers["facebook-api-version"] = version
            status = 200
        except GraphError as error:
            if error.eta_minutes is not None and error.code in _ETA_CODES:
                eta = error.eta_minutes
                scope = CallScope(
                    business_id=scope.business_id or "0",
                    use_case=_BUC_TYPES.get(error.code, scope.use_case),
                    account_id=scope.account_id,
                    insights=scope.insights,
                )
            status, answer = error.status, error.body(fbtrace_id)
        except Exception:
            # Meta's generic failure; transient so clients exercise their retry path.
            error = GraphError(
                "An unknown error has occurred.", code=1, status=500, is_transient=True
            )
            status, answer = error.status, error.body(fbtrace_id)
        return status, answer, {**self.usage.headers(pct, scope, eta), **headers}

    def _scope(self, path: str) -> CallScope:
        """What a call is billed against, for the usage headers (best effort, never raises)."""
        match = _VERSIONED_PATH.match(path)
        if match is None:
            return CallScope()
        node, _, edge = match.group(2).partition("/")
        if _ACCOUNT_NODE.match(node):
            digits = node.removeprefix("act_")
            insights = edge == "insights"
            use_case = "ads_insights" if insights else "ads_management"
            return CallScope(digits, use_case, account_id=digits, insights=insights)
        account = self._ads.run_account(node)
        if account is not None:
            return CallScope(account, "ads_insights", account_id=account, insights=True)
        kind = self._page.kind(node)
        if kind is not None:
            use_case = "leadgen" if kind == "lead" or edge == "leads" else "pages"
            return CallScope(self.data.page_id, use_case)
        return CallScope()

    def _route(self, method: str, path: str, params: dict[str, str]) -> tuple[str, dict]:
        match = _VERSIONED_PATH.match(path)
        if match is None:
            raise GraphError(
                f"Unknown path components: {path} (the emulator requires a /vX.Y/ version prefix)",
                code=2500,
            )
        version, rest = match.groups()
        self._authenticate(params)

        node, _, edge = rest.partition("/")
        call = Call(
            method=method,
            path=path,
            version=version,
            node=node,
            edge=edge or None,
            params=params,
            base_url=self.url,
            default_limit=self.default_limit,
        )
        if _ACCOUNT_NODE.match(node) and self.data.has_account(node):
            if method == "POST" and edge == "insights":
                will_fail = self.faults.take("async_fail", method, path) is not None
                return version, self._ads.create_report_run(call, will_fail=will_fail)
            if method == "GET":
                return version, self._ads.account_edge(call)
        elif method == "GET" and self._ads.has_run(node):
            return version, self._ads.report_run(call)
        elif method == "GET" and (kind := self._page.kind(node)) is not None:
            return version, self._page.handle(call, kind)
        raise GraphError(
            f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation. "
            "Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api",
            code=100,
            error_type="GraphMethodException",
            subcode=33,
        )

    def _authenticate(self, params: dict[str, str]) -> None:
        token = params.get("access_token")
        if not token:
            raise GraphError(
                "An active access token must be used to query information about the current user.",
                code=2500,
            )
        # The token is deliberately never echoed back, neither in messages nor in the log.
        if self.expected_token is not None and not secrets.compare_digest(
            token.encode(), self.expected_token.encode()
        ):
            raise GraphError("Invalid OAuth access token - Cannot parse access token", code=190)


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP adapter; all logic lives in :meth:`GraphEmulator.handle`."""

    emulator: GraphEmulator  # bound per server by GraphEmulator.start()
    server_version = "GraphEmulator/1.0"
    # Idle connections must not pin handler threads forever.
    timeout = 30

    def _respond(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status, answer, headers = self.emulator.handle(self.command, self.path, body)
        payload = json.dumps(answer, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _respond

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default per-request stderr logging (it would include access tokens)."""
