"""`GET /api/customers`: the customer list, paged by keyset, searchable, served from memory.

Each API process holds the customer index in memory (`customer_index_memory`), built from the
cache's index segments and kept current segment by segment; a page is a walk of that memory
(`customer_query`), never a read of every segment. The parameters are parsed here rather than
by FastAPI, so that a bad one answers 400 with a problem document naming it (FastAPI would
answer 422); the OpenAPI document still describes each one (`PARAMETERS`).

Headers: `X-Cache` (HIT; MISS when the index or this client's own write was built for the
request; STALE while a change is not in memory yet, or the database cannot be asked), a strong
`ETag` of the page (If-None-Match gives 304), and an RFC 8288 `Link: <...>; rel="next"` to the
next page when there is one.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from pydantic import BaseModel, Field

from crm_pipeline.api.auth import AUTH_RESPONSES, authenticate
from crm_pipeline.api.customer_index_memory import CustomerIndexMemory
from crm_pipeline.api.customer_query import (
    DEFAULT_LIMIT,
    MAX_CURSOR_CHARS,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    BadRequest,
    parse_query,
)
from crm_pipeline.api.customer_search import SORTS
from crm_pipeline.api.problems import Problem

CACHE_CONTROL = "private, no-cache"  # as every cache-first read: revalidate with the ETag


class CustomerLine(BaseModel):
    """One customer of the list (a line of the customer index)."""

    id: int
    name: str | None
    email: str | None
    phone: str | None
    tier: str | None
    orders: int = Field(description="orders counted as revenue (paid, completed, shipped)")
    revenue: float = Field(description="sum of those orders' amounts")
    leads: int = Field(description="Lead Ads leads linked to the customer")
    updated_at: str = Field(description="last change of the customer row, UTC ISO 8601")


class CustomerPage(BaseModel):
    """A page of the customer list."""

    customers: list[CustomerLine]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page (same `sort`); null on the last page"
    )


PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"customers per page (default {DEFAULT_LIMIT}); 400 outside 1..{MAX_LIMIT}",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIMIT,
            "default": DEFAULT_LIMIT,
        },
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": (
            "`next_cursor` of the previous page (opaque; only with the `sort` it was issued "
            "for). Keyset paging: customers written meanwhile never make another customer "
            "repeat or go missing."
        ),
        "schema": {"type": "string", "maxLength": MAX_CURSOR_CHARS},
    },
    {
        "name": "q",
        "in": "query",
        "required": False,
        "description": (
            "case-insensitive prefix search: every word a prefix of a word of the name, or a "
            "prefix of the email, or (for a phone-like term) of the phone's digits"
        ),
        "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
    },
    {
        "name": "tier",
        "in": "query",
        "required": False,
        "description": "only customers of this tier (exact)",
        "schema": {"type": "string"},
    },
    {
        "name": "sort",
        "in": "query",
        "required": False,
        "description": (
            "name (A to Z), revenue or updated (highest or newest first); ties by id ascending"
        ),
        "schema": {"type": "string", "enum": list(SORTS), "default": "name"},
    },
]

_HEADERS = {
    "X-Cache": {"description": "HIT, MISS or STALE", "schema": {"type": "string"}},
    "ETag": {"description": "strong validator of this page", "schema": {"type": "string"}},
    "Link": {
        "description": 'RFC 8288 `<...>; rel="next"`: the next page (absent on the last)',
        "schema": {"type": "string"},
    },
}

router = APIRouter(tags=["reads"])


@router.get(
    "/api/customers",
    summary="Customer list: paged, searchable, sortable (cache-first, from memory)",
    response_model=CustomerPage,
    responses={
        **AUTH_RESPONSES,
        200: {"description": "a page of customers", "headers": _HEADERS},
        304: {"description": "If-None-Match matched the ETag"},
        400: {"description": "a parameter is out of range, or the cursor is not one of ours"},
        503: {"description": "no customer index in the cache and the database is unavailable"},
    },
    openapi_extra={"parameters": PARAMETERS},
    dependencies=[Security(authenticate, scopes=["customers:read"])],
)
async def list_customers(request: Request) -> Response:
    """A page of customers from the in-memory index (see the module docstring)."""
    params = request.query_params
    try:
        query = parse_query(
            _limit(params.get("limit")),
            params.get("cursor"),
            params.get("q"),
            params.get("tier"),
            params.get("sort"),
        )
    except BadRequest as exc:
        raise Problem(400, "Bad request", str(exc)) from None
    memory: CustomerIndexMemory = request.app.state.customers
    answer = await memory.prepare()
    found = await memory.page(query)
    body = orjson.dumps(
        {"customers": [c.as_json() for c in found.customers], "next_cursor": found.next_cursor}
    )
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"X-Cache": answer.status, "ETag": etag, "Cache-Control": CACHE_CONTROL}
    headers.update(answer.headers)
    if found.next_cursor is not None:
        headers["Link"] = f'<{_next_url(request, found.next_cursor)}>; rel="next"'
    if etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer between 1 and {MAX_LIMIT}.") from None


def _next_url(request: Request, cursor: str) -> str:
    """This request's path and parameters, with `cursor` for the next page (a relative
    reference: right behind any proxy)."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    return f"{request.url.path}?{urlencode([*kept, ('cursor', cursor)])}"


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {t.strip().removeprefix("W/") for t in header.split(",")}
