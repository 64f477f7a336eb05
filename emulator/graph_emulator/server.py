"""A Graph API emulator: Starlette on uvicorn, on 127.0.0.1, speaking Meta's wire format.

It serves what the pipeline reads (``/vX.Y/act_<id>`` and its ``insights|campaigns|adsets|ads``,
async report runs, ``me/adaccounts`` and ``me/accounts``, the Page's lead forms, leads,
conversations and messages) from :class:`EmulatorData`, with Meta's cursor paging, string-typed
numbers, usage headers and error bodies, so the real facebook-business SDK can be pointed at it
by setting the session's ``GRAPH`` URL. It speaks HTTP/1.1 with keep-alive: a client's pool reuses
its connections. A :class:`FaultPlan` injects throttling, transient and reduce-data errors, bad
tokens, missing permissions and failing report runs; ``latency_ms`` delays every answer.

Meta's 2026 Marketing API: insights at every ``level`` with ``breakdowns``,
``action_breakdowns`` and ``action_attribution_windows`` (:mod:`graph_emulator.insights`; rows
split and summed exactly), ``effective_status`` filters (deleted and archived objects hidden by
default), single campaign, ad set and ad nodes, Page access tokens (Messenger reads need one:
:mod:`graph_emulator.page_tokens`), a version table (:class:`VersionTable`: deprecated versions
warn, expired ones fail with code 2635) and the reach throttle header on broken-down reach.

:meth:`GraphEmulator.handle` answers one request without any HTTP (method, path and body in,
status, JSON body and headers out); the HTTP app routes each request to the same answer.

Environment (read when the arguments are not given): ``CRM_EMULATOR_FAULTS`` (a JSON fault list,
see :mod:`graph_emulator.faults`) and ``CRM_EMULATOR_LATENCY_MS``.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from graph_emulator.ads import AdRoutes
from graph_emulator.app import build_app, request_params
from graph_emulator.call import Call
from graph_emulator.data import EmulatorData
from graph_emulator.faults import FaultPlan
from graph_emulator.me import MeRoutes
from graph_emulator.page import PageRoutes
from graph_emulator.page_tokens import PAGE, authenticate, not_for_page_tokens
from graph_emulator.reach_throttle import ReachThrottle
from graph_emulator.routing import match_route
from graph_emulator.serving import BackgroundServer
from graph_emulator.usage import CallScope, UsageMeter
from graph_emulator.versions import VersionTable
from graph_emulator.wire import GraphError, error_for_fault

__all__ = ["LATENCY_ENV", "GraphEmulator", "RecordedRequest"]

LATENCY_ENV = "CRM_EMULATOR_LATENCY_MS"
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

    Use as a context manager or call :meth:`start` / :meth:`stop`. uvicorn serves it on an
    ephemeral port of ``host`` (127.0.0.1 by default) from a daemon thread. ``faults`` defaults
    to the plan in ``CRM_EMULATOR_FAULTS`` and ``latency_ms`` to ``CRM_EMULATOR_LATENCY_MS``; a
    report run completes on its ``async_polls_to_complete``-th status poll. With
    ``require_page_token`` (the default, as on Meta) conversations and messages need the Page
    token from ``GET /<page-id>?fields=access_token``; ``versions`` replaces the version table.
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
        require_page_token: bool = True,
        versions: VersionTable | None = None,
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
        self.versions = versions if versions is not None else VersionTable()
        self._reach = ReachThrottle()
        self._ads = AdRoutes(self.data, async_polls_to_complete)
        self._me = MeRoutes(self.data)
        self._page = PageRoutes(self.data, require_page_token=require_page_token)
        self._app = build_app(self)
        self._server: BackgroundServer | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._clients: set[tuple[str, int]] = set()
        # Requests being answered right now, per ad account (None: no account) and in all.
        self._in_flight: dict[str | None, int] = {}
        self._most_in_flight: dict[str | None, int] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GraphEmulator:
        """Bind and start serving in a daemon thread; returns ``self``."""
        if self._server is None:
            server = BackgroundServer(
                self._app, self.host, self.port, name=f"graph-emulator-{self.host}"
            )
            server.start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call more than once."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> GraphEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to use as the SDK session's ``GRAPH``, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None or self._server.address is None:
            raise RuntimeError("GraphEmulator is not running; call start() first")
        host, port = self._server.address
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
        """Forget the recorded requests (and the connections counted, and the most in flight)."""
        with self._lock:
            self._requests.clear()
            self._clients.clear()
            self._most_in_flight.clear()

    def most_in_flight(self, account_id: str | None = None) -> int:
        """The most requests ever being answered at once: on one ad account's nodes
        (``act_<id>``), or across all requests with ``account_id`` None. A client's concurrency,
        as the server sees it."""
        with self._lock:
            return self._most_in_flight.get(account_id, 0)

    @property
    def connections(self) -> int:
        """How many client connections (distinct client address and port) sent requests over HTTP.

        With keep-alive, a client that reuses its connections counts each once, however many
        requests it sends on them.
        """
        with self._lock:
            return len(self._clients)

    def count_connection(self, host: str, port: int) -> None:
        """Note the client connection a request came on (the HTTP layer calls this)."""
        with self._lock:
            self._clients.add((host, port))

    # -- answering -------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, body: bytes = b""
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one request without HTTP: returns (HTTP status, JSON body, extra headers).

        ``raw_path`` may carry a query string; ``body`` is a form-encoded POST body (the SDK
        sends POST parameters that way), its parameters merged over the query string's. It is
        routed exactly as the HTTP app routes it.
        """
        split = urlsplit(raw_path)
        path = unquote(split.path)
        kind, path_params = match_route(self._app.routes, method, path)
        return self.answer(method, path, request_params(split.query, body), kind, path_params)

    def answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        kind: str,
        path_params: dict[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer a routed request: record it, wait the latency, inject faults, count usage."""
        with self._lock:
            public = {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
            self._requests.append(RecordedRequest(method, path, public))
        with self._answering(_account_of(path)):
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            return self._answer(method, path, params, kind, path_params)

    @contextmanager
    def _answering(self, account: str | None) -> Iterator[None]:
        """Count a request in flight (its account's and the total) while it is answered."""
        with self._lock:
            for scope in {account, None}:
                self._in_flight[scope] = self._in_flight.get(scope, 0) + 1
                self._most_in_flight[scope] = max(
                    self._most_in_flight.get(scope, 0), self._in_flight[scope]
                )
        try:
            yield
        finally:
            with self._lock:
                for scope in {account, None}:
                    self._in_flight[scope] -= 1

    def _answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        kind: str,
        path_params: dict[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:

        call = self._call(method, path, params, path_params)
        fbtrace_id = secrets.token_urlsafe(16)
        scope = self._scope(kind, call)
        pct = self.usage.count_call()
        headers = {"x-fb-trace-id": fbtrace_id}
        eta = 0
        try:
            if kind != "unversioned":
                # Every answer on a deprecated version carries Meta's warning, errors too.
                headers.update(self.versions.check(call.version, call.path))
            fault = self.faults.take(_REQUEST_FAULTS, method, path)
            if fault is not None:
                raise error_for_fault(fault)
            answer = self._dispatch(kind, call)
            headers["facebook-api-version"] = call.version
            if kind == "ad_account" and call.edge == "insights":
                headers.update(self._reach.headers(call.node, call.params))
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

    def _call(
        self, method: str, path: str, params: dict[str, str], path_params: dict[str, str]
    ) -> Call:
        return Call(
            method=method,
            path=path,
            version=path_params.get("version", ""),
            node=path_params.get("node", "me"),
            edge=path_params.get("edge") or None,
            params=params,
            # Paging links point back here; a pure handle() without a server uses host:port.
            base_url=self.url if self._server is not None else f"http://{self.host}:{self.port}",
            default_limit=self.default_limit,
        )

    def _scope(self, kind: str, call: Call) -> CallScope:
        """What a call is billed against, for the usage headers (best effort, never raises)."""
        if kind == "ad_account":
            digits = call.node.removeprefix("act_")
            insights = call.edge == "insights"
            use_case = "ads_insights" if insights else "ads_management"
            return CallScope(digits, use_case, account_id=digits, insights=insights)
        if kind != "object":
            return CallScope()
        account = self._ads.run_account(call.node)
        if account is not None:
            return CallScope(account, "ads_insights", account_id=account, insights=True)
        page_kind = self._page.kind(call.node)
        if page_kind is not None:
            leadgen = page_kind == "lead" or call.edge == "leads"
            return CallScope(self.data.page_id, "leadgen" if leadgen else "pages")
        return CallScope()

    def _dispatch(self, kind: str, call: Call) -> dict[str, Any]:
        if kind == "unversioned":
            raise GraphError(
                f"Unknown path components: {call.path} "
                "(the emulator requires a /vX.Y/ version prefix)",
                code=2500,
            )
        token_kind = authenticate(
            call.params.get("access_token"), self.expected_token, self.data.page_id
        )
        page_kind = self._page.kind(call.node) if kind == "object" else None
        if token_kind == PAGE and page_kind is None:
            raise not_for_page_tokens()
        if kind == "me" and call.method == "GET":
            return self._me.handle(call)
        if kind == "ad_account" and self.data.has_account(call.node):
            if call.method == "POST" and call.edge == "insights":
                will_fail = self.faults.take("async_fail", call.method, call.path) is not None
                return self._ads.create_report_run(call, will_fail=will_fail)
            if call.method == "GET":
                return self._ads.account_edge(call)
        if kind == "object" and call.method == "GET":
            if self._ads.has_run(call.node):
                return self._ads.report_run(call)
            if page_kind is not None:
                return self._page.handle(call, page_kind, with_page_token=token_kind == PAGE)
            if self._ads.has_object(call.node):
                return self._ads.object_node(call)
        raise GraphError(
            f"Unsupported {call.method.lower()} request. Object with ID '{call.node}' does not "
            "exist, cannot be loaded due to missing permissions, or does not support this "
            "operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api",
            code=100,
            error_type="GraphMethodException",
            subcode=33,
        )


def _account_of(path: str) -> str | None:
    """The ``act_<id>`` node a request path is on, if any."""
    return next((part for part in path.split("/") if part.startswith("act_")), None)
