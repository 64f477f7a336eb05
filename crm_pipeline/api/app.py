"""The FastAPI application: `create_app()` wires settings, database, cache and routes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from crm_pipeline.api import cache_reads, problems, webhooks, writes
from crm_pipeline.api.cache_reads import CacheStore
from crm_pipeline.api.database import Database
from crm_pipeline.api.limits import BodySizeLimit
from crm_pipeline.config import Settings, load_settings, normalize_database_url
from crm_pipeline.db.engine import resolve_database_url

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # Meta's webhook deliveries are a few KB


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    cache_dir: Path | str | None = None,
    cache_ttl_seconds: int | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """Build the API. Arguments override the environment (`load_settings()`)."""
    settings = settings or load_settings()
    if database_url is not None:
        database_url = normalize_database_url(database_url)

    def url() -> str:
        # The embedded server (when CRM_DATABASE_URL is unset) starts on first use, not here.
        return database_url or resolve_database_url(settings)

    db = Database(url, connect_timeout=int(os.environ.get("CRM_API_DB_CONNECT_TIMEOUT", "3")))
    store = CacheStore(
        Path(cache_dir) if cache_dir is not None else settings.cache_dir,
        db,
        cache_ttl_seconds if cache_ttl_seconds is not None else cache_reads.ttl_from_env(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()
        db.dispose()

    app = FastAPI(
        title="crm-pipeline API",
        version="1",
        description=(
            "Facebook webhooks, CRM write routes and cache-first reads of the JSON cache files."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.cache = store
    problems.install(app)
    app.include_router(webhooks.router)
    app.include_router(writes.router)
    app.include_router(cache_reads.router)

    @app.get("/health", tags=["ops"], summary="Liveness and database reachability")
    def health(request: Request) -> dict:
        up = request.app.state.db.ping()
        body: dict = {"status": "ok", "database": "up" if up else "down"}
        if not up and db.down_since_iso():
            body["database_unavailable_since"] = db.down_since_iso()
        return body

    limit = max_body_bytes or int(
        os.environ.get("CRM_API_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
    )
    app.add_middleware(BodySizeLimit, max_bytes=limit)
    return app
