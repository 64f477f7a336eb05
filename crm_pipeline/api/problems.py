"""Errors as RFC 9457 problem details; no stack traces or secrets ever reach a client."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("crm_pipeline.api")

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error answered as `application/problem+json` with `status`."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class DatabaseUnavailable(Problem):
    """The source-of-truth database cannot be reached; the client should retry later."""

    def __init__(self, since: str | None = None) -> None:
        super().__init__(
            503,
            "Database unavailable",
            "The CRM database cannot be reached right now; nothing was changed. Retry later.",
            headers={"Retry-After": "5"},
            **({"unavailable_since": since} if since else {}),
        )


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem-details response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what: the offending input may be personal data, so it is not echoed.
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem details."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        title = detail or "HTTP error"
        return problem_response(exc.status_code, title, None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(400, "Malformed JSON", "The request body is not valid JSON.")
        return problem_response(
            422, "Invalid request", "The request does not match the schema.", errors=errors
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this, answers, then re-raises to the server,
        # which would log the error a second time, message included: `_LoggedOnce` stops that.
        log_unhandled(request.method, _route_path(request.scope), exc)
        request.scope[_LOGGED] = True
        return problem_response(500, "Internal server error")

    build_middleware_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: _LoggedOnce(build_middleware_stack())  # type: ignore[method-assign]


_LOGGED = "crm_pipeline.error_logged"


class _LoggedOnce:
    """Outside Starlette's ServerErrorMiddleware: swallow an error it has already answered
    and `_unexpected` has logged, instead of letting uvicorn log it again with its message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            if not scope.get(_LOGGED):
                raise


def _route_path(scope: Scope) -> str:
    # The route's template (`/api/customers/{customer_id}`), not the URL with its values.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(no route)"


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def describe_exception(exc: BaseException) -> str:
    """The exception's type and traceback frames (file, line, function), and the same for the
    exceptions it was raised from; never a message or a value, which may hold personal data
    (a psycopg DETAIL with an email, say)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(_type_name(current) + " (message withheld), most recent call last:")
        parts.extend(
            f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'
            for frame in traceback.extract_tb(current.__traceback__)
        )
        if current.__cause__ is not None:
            parts.append("raised from:")
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append("raised while handling:")
            current = current.__context__
        else:
            current = None
    return "\n".join(parts)


def log_unhandled(method: str, route: str, exc: BaseException) -> None:
    """One error record for an unhandled exception: type, method, route and frames only."""
    log.error(
        "unhandled %s on %s %s\n%s",
        _type_name(exc),
        method,
        route,
        describe_exception(exc),
        extra={"error_type": _type_name(exc), "method": method, "route": route},
    )
