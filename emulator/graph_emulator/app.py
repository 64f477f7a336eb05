"""The emulator's HTTP layer: a Starlette app whose routes hand each request to the emulator.

All Graph logic lives in :meth:`GraphEmulator.answer`, which the pure handler
(:meth:`GraphEmulator.handle`) calls too; this layer only reads the request, runs the answer in
a worker thread (an injected latency sleeps there, never in the event loop) and writes it back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

try:  # optional: the emulator stands alone on the stdlib encoder
    import orjson
except ImportError:  # pragma: no cover - orjson is installed with crm-pipeline
    orjson = None

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from graph_emulator.routing import graph_routes

__all__ = ["Answering", "build_app", "encode_answer", "request_params"]

_JSON = "application/json; charset=UTF-8"


def request_params(query: str, body: bytes) -> dict[str, str]:
    """The query string's parameters with a form-encoded body's merged over them.

    The SDK sends POST parameters as a form body; Meta reads both places.
    """
    params = dict(parse_qsl(query, keep_blank_values=True))
    if body:
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def encode_answer(answer: dict[str, Any]) -> bytes:
    """The JSON body of an answer, compact like Meta's (orjson when installed: an insights page
    of 500 rows is ~200 KB, and the stdlib encoder's time would count in every benchmark)."""
    if orjson is not None:
        return orjson.dumps(answer)
    return json.dumps(answer, separators=(",", ":")).encode()


class Answering(Protocol):
    """What the app needs of the emulator (:class:`~graph_emulator.server.GraphEmulator`)."""

    def answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        kind: str,
        path_params: dict[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]: ...

    def count_connection(self, host: str, port: int) -> None: ...


def _answer_encoded(emulator: Answering, request: tuple) -> tuple[int, bytes, dict[str, str]]:
    status, answer, headers = emulator.answer(*request)
    return status, encode_answer(answer), headers


def build_app(emulator: Answering) -> Starlette:
    """A Starlette app serving ``emulator`` on the Graph API's routes."""

    def endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            query = request.scope["query_string"].decode("latin-1")
            params = request_params(query, await request.body())
            if request.client is not None:
                emulator.count_connection(request.client.host, request.client.port)
            # Answered and encoded in a worker thread: the event loop keeps serving the other
            # connections meanwhile.
            status, body, headers = await run_in_threadpool(
                _answer_encoded,
                emulator,
                (request.method, request.scope["path"], params, kind, request.path_params),
            )
            return Response(body, status, headers=headers, media_type=_JSON)

        return serve

    return Starlette(routes=graph_routes(endpoint))
