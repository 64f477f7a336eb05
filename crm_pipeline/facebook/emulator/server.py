"""A Graph API emulator: a threaded HTTP server on 127.0.0.1 speaking Meta's wire format.

It serves the read edges the pipeline uses (``/vX.Y/act_<id>/insights|campaigns|adsets|ads``) from
:class:`EmulatorData`, with Meta's cursor paging, string-typed numbers and error bodies, so the real
facebook-business SDK can be pointed at it by setting the session's ``GRAPH`` URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from crm_pipeline.facebook.emulator.data import EmulatorData

__all__ = ["GraphEmulator", "RecordedRequest"]

# Meta accepts unversioned paths, but the pipeline must always pin a version, so we refuse them.
_VERSIONED_PATH = re.compile(r"^/(v\d+\.\d+)/(.*)$")
_ACCOUNT_NODE = re.compile(r"^act_\d+$")
_SECRET_PARAMS = frozenset({"access_token", "appsecret_proof"})
_OBJECT_EDGES = {"campaigns": "Campaign", "adsets": "AdSet", "ads": "Ad"}
# Insight parameters that would change the shape of the result; silently ignoring them would
# return plausible but wrong data, so the emulator rejects them instead.
_UNSUPPORTED_INSIGHT_PARAMS = (
    "breakdowns",
    "action_breakdowns",
    "time_ranges",
    "date_preset",
    "filtering",
)
_DEFAULT_INSIGHT_FIELDS = ("impressions", "spend")
_DATE_FIELDS = ("date_start", "date_stop")
_APP_USAGE = json.dumps({"call_count": 1, "total_cputime": 1, "total_time": 1})


@dataclass(frozen=True)
class RecordedRequest:
    """One request seen by the emulator; secrets (token, appsecret_proof) are never recorded."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)


class _GraphError(Exception):
    """An error to be answered with Meta's error body."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        status: int = 400,
        is_transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_type = error_type
        self.subcode = subcode
        self.status = status
        self.is_transient = is_transient

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.is_transient
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def _param_error(message: str) -> _GraphError:
    return _GraphError(f"(#100) {message}", code=100)


def _encode_cursor(index: int) -> str:
    # Opaque to clients, like Meta's; the position is all we need because the data is static.
    return base64.urlsafe_b64encode(f"emu:{index}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, name: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, index = raw.partition(":")
        if prefix != "emu" or not index.isdigit():
            raise ValueError(raw)
        return int(index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _param_error(f"Invalid {name} cursor") from None


def _parse_fields(raw: str | None) -> list[str] | None:
    """Parse ``fields`` as either a comma-separated string or a JSON list string."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.startswith("["):
        try:
            fields = json.loads(text)
        except ValueError:
            raise _param_error("fields must be a comma-separated list or a JSON array") from None
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise _param_error("fields must be a list of strings")
        return [f.strip() for f in fields if f.strip()]
    return [f.strip() for f in text.split(",") if f.strip()]


def _check_fields(fields: list[str], allowed: dict[str, Any], node_type: str) -> None:
    for name in fields:
        if name not in allowed:
            raise _param_error(
                f"Tried accessing nonexisting field ({name}) on node type ({node_type})"
            )


def _parse_time_range(raw: str | None) -> tuple[date, date]:
    if not raw:
        raise _param_error("time_range is required by the emulator (date_preset is unsupported)")
    try:
        value = json.loads(raw)
        since = date.fromisoformat(value["since"])
        until = date.fromisoformat(value["until"])
    except (ValueError, TypeError, KeyError):
        raise _param_error(
            'time_range must be a JSON object {"since":"YYYY-MM-DD","until":"YYYY-MM-DD"}'
        ) from None
    if since > until:
        raise _param_error("time_range: since must be on or before until")
    return since, until


class GraphEmulator:
    """Serve :class:`EmulatorData` over HTTP in the Graph API wire format.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The server listens on an
    ephemeral port of ``host`` (127.0.0.1 by default) in a daemon thread.
    """

    def __init__(
        self,
        data: EmulatorData | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expected_token: str | None = None,
        default_limit: int = 25,
    ) -> None:
        self.data = data if data is not None else EmulatorData()
        self.host = host
        self.port = port
        self.expected_token = expected_token
        self.default_limit = default_limit
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

    # -- request log -----------------------------------------------------------------------------

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

    def handle(self, method: str, raw_path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one request: returns (HTTP status, JSON body, extra headers)."""
        split = urlsplit(raw_path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        with self._lock:
            public = {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
            self._requests.append(RecordedRequest(method, split.path, public))

        fbtrace_id = secrets.token_urlsafe(16)
        headers = {"X-App-Usage": _APP_USAGE, "x-fb-trace-id": fbtrace_id}
        try:
            version, body = self._route(method, split.path, params)
            headers["facebook-api-version"] = version
            return 200, body, headers
        except _GraphError as error:
            return error.status, error.body(fbtrace_id), headers
        except Exception:
            # Meta's generic failure; transient so clients exercise their retry path.
            error = _GraphError(
                "An unknown error has occurred.", code=1, status=500, is_transient=True
            )
            return error.status, error.body(fbtrace_id), headers

    def _route(self, method: str, path: str, params: dict[str, str]) -> tuple[str, dict]:
        match = _VERSIONED_PATH.match(path)
        if match is None:
            raise _GraphError(
                f"Unknown path components: {path} (the emulator requires a /vX.Y/ version prefix)",
                code=2500,
            )
        version, rest = match.groups()
        self._authenticate(params)

        parts = rest.split("/")
        node = parts[0]
        if method != "GET" or not self._node_exists(node):
            raise _GraphError(
                f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation. "
                "Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api",
                code=100,
                error_type="GraphMethodException",
                subcode=33,
            )
        if len(parts) != 2 or (parts[1] != "insights" and parts[1] not in _OBJECT_EDGES):
            edge = "/".join(parts[1:]) or "(node)"
            raise _param_error(
                f"Tried accessing nonexisting field ({edge}) on node type (AdAccount)"
            )

        if parts[1] == "insights":
            items = self._insights(node, params)
        else:
            items = self._objects(node, parts[1], params)
        return version, self._page(items, path, params)

    def _authenticate(self, params: dict[str, str]) -> None:
        token = params.get("access_token")
        if not token:
            raise _GraphError(
                "An active access token must be used to query information about the current user.",
                code=2500,
            )
        # The token is deliberately never echoed back, neither in messages nor in the log.
        if self.expected_token is not None and not secrets.compare_digest(
            token.encode(), self.expected_token.encode()
        ):
            raise _GraphError("Invalid OAuth access token - Cannot parse access token", code=190)

    def _node_exists(self, node: str) -> bool:
        return bool(_ACCOUNT_NODE.match(node)) and self.data.has_account(node)

    # -- edges -----------------------------------------------------------------------------------

    def _insights(self, account_id: str, params: dict[str, str]) -> list[dict]:
        level = params.get("level", "account")
        if level != "ad":
            raise _param_error(f"level={level} is not supported by the emulator; use level=ad")
        increment = params.get("time_increment", "all_days")
        if increment != "1":
            raise _param_error(
                f"time_increment={increment} is not supported by the emulator; use 1"
            )
        for name in _UNSUPPORTED_INSIGHT_PARAMS:
            if params.get(name, "") not in ("", "[]"):
                raise _param_error(f"{name} is not supported by the emulator")
        since, until = _parse_time_range(params.get("time_range"))
        rows = self.data.insights(account_id, since, until)

        fields = _parse_fields(params.get("fields")) or list(_DEFAULT_INSIGHT_FIELDS)
        if rows:
            _check_fields(fields, rows[0], "AdsInsights")
        # Meta always reports the reporting window of each row, requested or not.
        wanted = fields + [f for f in _DATE_FIELDS if f not in fields]
        return [{name: row[name] for name in wanted} for row in rows]

    def _objects(self, account_id: str, edge: str, params: dict[str, str]) -> list[dict]:
        loader: Callable[[str], list[dict]] = getattr(self.data, edge)
        objects = loader(account_id)
        fields = _parse_fields(params.get("fields")) or ["id"]
        if objects:
            _check_fields(fields, objects[0], _OBJECT_EDGES[edge])
        # Graph nodes always carry their id, whatever was asked for.
        wanted = ["id"] + [f for f in fields if f != "id"]
        return [{name: obj[name] for name in wanted} for obj in objects]

    # -- paging ----------------------------------------------------------------------------------

    def _page(self, items: list[dict], path: str, params: dict[str, str]) -> dict[str, Any]:
        """Slice ``items`` into one cursor page, with Meta's ``paging`` block."""
        limit = self._limit(params)
        if params.get("after"):
            start = _decode_cursor(params["after"], "after") + 1
        elif params.get("before"):
            start = max(0, _decode_cursor(params["before"], "before") - limit)
        else:
            start = 0
        page = items[start : start + limit]
        if not page:
            return {"data": []}

        end = start + len(page)
        paging: dict[str, Any] = {
            "cursors": {"before": _encode_cursor(start), "after": _encode_cursor(end - 1)}
        }
        # Like Meta, the links repeat every original parameter (token included) so that they can
        # be fetched as they are; only the cursor parameters change.
        base = {k: v for k, v in params.items() if k not in ("after", "before")}
        if start > 0:
            query = urlencode({**base, "before": paging["cursors"]["before"]})
            paging["previous"] = f"{self.url}{path}?{query}"
        if end < len(items):
            query = urlencode({**base, "after": paging["cursors"]["after"]})
            paging["next"] = f"{self.url}{path}?{query}"
        return {"data": page, "paging": paging}

    def _limit(self, params: dict[str, str]) -> int:
        raw = params.get("limit")
        if raw is None or raw == "":
            return self.default_limit
        try:
            limit = int(raw)
        except ValueError:
            raise _param_error("limit must be an integer") from None
        if limit < 1:
            raise _param_error("limit must be a positive integer")
        return limit


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP adapter; all logic lives in :meth:`GraphEmulator.handle`."""

    emulator: GraphEmulator  # bound per server by GraphEmulator.start()
    server_version = "GraphEmulator/1.0"
    # Idle connections must not pin handler threads forever.
    timeout = 30

    def _respond(self) -> None:
        status, body, headers = self.emulator.handle(self.command, self.path)
        payload = json.dumps(body, separators=(",", ":")).encode()
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
