"""The FastAPI application: `create_app()` wires settings, database, cache and routes.

Per process it also runs two listener threads: the API keys (`auth.KeyRing`) and the change
notifications (`change_listener.ChangeListener`), so neither a key check nor a cache hit needs
a database round trip; and the customer list's in-memory index with its refresh thread
(`customer_index_memory.CustomerIndexMemory`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crm_pipeline.api import (
    cache_reads,
    customer_list,
    dashboard,
    docs_page,
    privacy,
    problems,
    webhooks,
    writes,
)
from crm_pipeline.api.auth import KeyRing
from crm_pipeline.api.cache_store import CacheStore
from crm_pipeline.api.change_listener import ChangeListener
from crm_pipeline.api.customer_index_memory import CustomerIndexMemory
from crm_pipeline.api.database import Database
from crm_pipeline.api.hosts import LOOPBACK_HOSTS, TrustedHosts
from crm_pipeline.api.limits import BodySizeLimit
from crm_pipeline.cache.recent_changes import RecentChanges
from crm_pipeline.cache.stores import Store, open_store, store_from_settings
from crm_pipeline.config import Settings, load_settings, normalize_database_url
from crm_pipeline.db.engine import libpq_url, resolve_database_url

log = logging.getLogger("crm_pipeline.api")


@dataclass(frozen=True)
class _Services:
    """What one API process holds: the database, the cache and its two listener threads, and
    the customer list's in-memory index."""

    db: Database
    cache: CacheStore
    changes: ChangeListener
    keys: KeyRing
    customers: CustomerIndexMemory

    def attach(self, app: FastAPI) -> None:
        app.state.db = self.db
        app.state.cache = self.cache
        app.state.changes = self.changes
        app.state.keys = self.keys
        app.state.customers = self.customers

    def close(self) -> None:
        self.changes.stop()
        self.keys.stop()
        self.customers.close()
        self.cache.close()
        self.db.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    cache_dir: Path | str | Store | None = None,
    cache_ttl_seconds: int | None = None,
    max_body_bytes: int | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
) -> FastAPI:
    """Build the API. Arguments override the environment (`load_settings()`); `cache_dir` is
    any cache location (a folder, `s3://bucket/prefix`, a `Store`; default `CRM_CACHE_URL`).

    `allowed_hosts` are the `Host` names accepted (default: `CRM_API_ALLOWED_HOSTS`, else the
    loopback names; `crm-pipeline serve` refuses a non-loopback bind without the setting).
    """
    settings = settings or load_settings()
    services = _services(settings, database_url, cache_dir, cache_ttl_seconds)
    app = FastAPI(
        title="crm-pipeline API",
        version="1",
        description=(
            "Facebook webhooks, CRM write routes and cache-first reads of the JSON cache files."
        ),
        lifespan=_lifespan(settings, services),
        # Served by docs_page from the package, not from a CDN (works offline); no ReDoc.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    services.attach(app)
    problems.install(app)
    app.include_router(webhooks.router)
    app.include_router(writes.router)
    app.include_router(privacy.router)
    app.include_router(customer_list.router)
    app.include_router(cache_reads.router)
    app.include_router(docs_page.router)
    app.include_router(dashboard.router)
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        tags=["ops"],
        summary="Liveness and database reachability",
    )
    app.add_api_route(
        "/health/ready",
        ready,
        methods=["GET"],
        tags=["ops"],
        summary="Readiness: 503 until the customer list's index is in memory",
        responses={503: {"description": "still loading the customer index; retry"}},
    )
    limit = max_body_bytes or settings.api.max_body_bytes
    app.add_middleware(
        BodySizeLimit, max_bytes=limit, body_timeout=settings.api.body_timeout_seconds
    )
    # Added last, so it runs first: a foreign Host is refused before anything else happens.
    app.add_middleware(
        TrustedHosts, allowed=allowed_hosts or settings.api.allowed_hosts or LOOPBACK_HOSTS
    )
    return app


def _services(
    settings: Settings,
    database_url: str | None,
    cache_dir: Path | str | Store | None,
    cache_ttl_seconds: int | None,
) -> _Services:
    if database_url is not None:
        database_url = normalize_database_url(database_url)

    def url() -> str:
        # The embedded server (when CRM_DATABASE_URL is unset) starts on first use, not here.
        return database_url or resolve_database_url(settings)

    db = Database(url, connect_timeout=settings.api.db_connect_timeout)
    recent = RecentChanges()
    if cache_dir is None:
        files = store_from_settings(settings)
    else:
        files = open_store(cache_dir, endpoint_url=settings.cache.s3_endpoint_url)
    ttl = cache_ttl_seconds if cache_ttl_seconds is not None else settings.api.cache_ttl_seconds
    store = CacheStore(files, db, ttl, recent=recent)
    changes = ChangeListener(lambda: libpq_url(url()), recent)
    keys = KeyRing(lambda: libpq_url(url()), settings.data_dir / "api" / "keyring.json")
    customers = CustomerIndexMemory(store.files.store, db, recent, ttl)
    return _Services(db, store, changes, keys, customers)


def _lifespan(
    settings: Settings, services: _Services
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        # Side by side: each waits (bounded) for its first load, or its failure.
        await asyncio.gather(
            run_in_threadpool(services.keys.start), run_in_threadpool(services.changes.start)
        )
        if settings.production and services.keys.count() == 0:
            log.warning(
                "no active API key: every /api/ route answers 401 until one is created "
                "(crm-pipeline api-keys create --name NAME --scopes ...)"
            )
        # Before the server accepts connections, so no request waits for these imports.
        cache_reads.preload()
        # Loads the customer index in its own thread: other routes need not wait for it.
        services.customers.start()
        yield
        services.close()

    return lifespan


def health(request: Request) -> dict:
    """Liveness, and whether the database answers."""
    db: Database = request.app.state.db
    up = db.ping()
    body: dict = {"status": "ok", "database": "up" if up else "down"}
    if not up and db.down_since_iso():
        body["database_unavailable_since"] = db.down_since_iso()
    return body


def ready(request: Request) -> JSONResponse:
    """Readiness, for a load balancer or an orchestrator's probe: 503 while the process is
    still loading the customer index (seconds at a million customers; a list request would
    wait for it), then 200. An unreachable database does not make it unready: the cache is
    served meanwhile."""
    customers: CustomerIndexMemory = request.app.state.customers
    if not customers.loaded():
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "customers": customers.count()})
