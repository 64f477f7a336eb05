"""Cache-first GET routes: JSON cache files (`CRM_CACHE_URL`: a folder or an S3 bucket prefix),
filled from the DB on a miss.

- HIT: the file is current; served with a strong ETag (If-None-Match gives 304).
- MISS: no file; built from one DB snapshot, written atomically, served. Also a file made stale
  by a write this process made (an API write route): rebuilt for that request, so a client
  reads its own writes at once.
- STALE: the file is past its TTL or behind the change log for the tables (and customer) it
  covers; served at once while one background refresh per key rebuilds it.
- DB down: every existing file is still served (STALE, with `X-Stale-Since`, the time the data
  was generated, and `X-Database-Unavailable-Since`); a miss answers 503.
- Store down (an S3 store that does not answer): the copy this process holds is served, with
  `X-Cache-Store-Unavailable-Since`; a file it never read is built from the DB and served.

Every answer says `Cache-Control: private, no-cache`: a browser may keep the file but asks
again each time, with the ETag, and gets a 304 while the file is current. The API already
knows cheaply whether a file is current (`cache_store.py`), and a max-age would let a browser
show data older than a committed write. See docs/architecture.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import Response

from crm_pipeline.api.auth import AUTH_RESPONSES, authenticate
from crm_pipeline.api.cache_files import Cached
from crm_pipeline.api.cache_keys import CacheKey, customer_key, file_key
from crm_pipeline.api.cache_store import OWN_WRITE, STALE, CacheStore
from crm_pipeline.api.problems import DatabaseUnavailable, Problem
from crm_pipeline.cache import registry

CACHE_CONTROL = "private, no-cache"


def _not_found(key: CacheKey) -> Problem:
    return Problem(
        404,
        "Not found",
        f"No {key.name.split(':')[0]} with that id.",
        headers={"Cache-Control": CACHE_CONTROL},
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in header.split(","))
    return etag in tags


async def _miss(store: CacheStore, key: CacheKey) -> Cached:
    """No file: build it (unless a remembered 404 says there is nothing to build)."""
    built = None
    if not await store.known_absent(key):  # a remembered 404 needs no build
        built = await store.build_for_request(key)  # DatabaseUnavailable → 503
    if built is None:
        raise _not_found(key)
    return built


async def _revalidate(
    store: CacheStore, key: CacheKey, cached: Cached, extra: dict[str, str]
) -> tuple[Cached, str]:
    """A file is there: (what to serve, X-Cache); outage headers go into `extra`."""
    served: Cached | None = cached
    status = "HIT"
    try:
        freshness = await store.freshness(key, cached)
        if freshness == OWN_WRITE:
            # The client may have just written it: answer with its write, not before it.
            served, status = await store.build_for_request(key), "MISS"
        elif freshness == STALE:
            status = "STALE"
            store.refresh_in_background(key)
    except DatabaseUnavailable:
        status = "STALE"
        generated = cached.document.get("generated_at")
        if generated:
            extra["X-Stale-Since"] = str(generated)
        if store.db.down_since_iso():
            extra["X-Database-Unavailable-Since"] = store.db.down_since_iso()
    if served is None:  # our own write deleted it
        raise _not_found(key)
    return served, status


async def serve(request: Request, key: CacheKey) -> Response:
    """The cache-first read path shared by every GET route.

    It runs on the event loop: a hit reads one small local file (an S3 object: one conditional
    GET, on a reader thread) and asks memory whether it is current (or, when memory cannot
    tell, awaits the batched change-log check); a miss, or a file behind this process's own
    write, builds in a worker thread.
    """
    store: CacheStore = request.app.state.cache
    extra: dict[str, str] = {}
    cached = await store.lookup(key)
    unavailable = store.files.unavailable_since_iso()
    if unavailable:
        extra["X-Cache-Store-Unavailable-Since"] = unavailable
    if cached is None:
        cached, status = await _miss(store, key), "MISS"
    else:
        cached, status = await _revalidate(store, key, cached, extra)
    headers = {
        "X-Cache": status,
        "ETag": cached.etag,
        "Cache-Control": CACHE_CONTROL,
        "Age": str(cached.age_seconds()),
        **extra,
    }
    if _etag_matches(request.headers.get("if-none-match"), cached.etag):
        return Response(status_code=304, headers=headers)
    return Response(cached.body, media_type="application/json", headers=headers)


# --- the routes: one per file of the cache registry -----------------------------------------
# (The customer list, served from the index segments in memory, is `customer_list.py`.)

_SUMMARY = file_key(registry.ANALYTICS_SUMMARY)
_INSIGHTS = file_key(registry.MARKETING_INSIGHTS)


router = APIRouter(tags=["reads"])

# Personal data (names, emails, phones, messages, lead answers) ...
_CUSTOMERS_READ = [Security(authenticate, scopes=["customers:read"])]
# ... and aggregates without personal data.
_ANALYTICS_READ = [Security(authenticate, scopes=["analytics:read"])]

_CACHED = {
    **AUTH_RESPONSES,
    200: {"description": "the cache file (X-Cache: HIT, MISS or STALE)"},
    304: {"description": "If-None-Match matched the ETag"},
    503: {"description": "no cached copy and the database is unavailable"},
}


@router.get(
    "/api/customers/{customer_id}",
    responses={**_CACHED, 404: {"description": "no such customer"}},
    summary="Customer 360 (cache-first)",
    dependencies=_CUSTOMERS_READ,
)
async def customer_profile(
    request: Request, customer_id: int = PathParam(ge=1, le=2**63 - 1)
) -> Response:
    """`customers/<id>.json`."""
    return await serve(request, customer_key(customer_id))


@router.get(
    "/api/analytics/summary",
    responses=_CACHED,
    summary="KPI summary (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def analytics_summary(request: Request) -> Response:
    """`analytics/summary.json`."""
    return await serve(request, _SUMMARY)


@router.get(
    "/api/marketing/insights",
    responses=_CACHED,
    summary="Ad insights (cache-first)",
    dependencies=_ANALYTICS_READ,
)
async def marketing_insights(request: Request) -> Response:
    """`marketing/insights.json`."""
    return await serve(request, _INSIGHTS)


def preload() -> None:
    """Import the builders' heavier dependencies (the summary's JSON schema validator) at
    startup, not on the event loop inside the first request."""
    from crm_pipeline.cache.summary import _validator

    _validator()
