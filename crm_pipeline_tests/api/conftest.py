"""A real uvicorn on 127.0.0.1 serving the API, plus helpers for signed webhook deliveries."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from crm_pipeline.api.app import create_app
from crm_pipeline.api.server import build_server
from crm_pipeline.config import Secret, Settings
from crm_pipeline.db.api_keys import create_key
from crm_pipeline.db.engine import get_engine

APP_SECRET = "test-app-secret-0123456789"
VERIFY_TOKEN = "test-verify-token-abcdef"


ALL_SCOPES = "customers:read,analytics:read,crm:write"


def issue_key(database_url: str, scopes: str = ALL_SCOPES, name: str | None = None) -> str:
    """A new API key on the database at `database_url` (as `crm-pipeline api-keys create`)."""
    with get_engine(database_url).begin() as conn:
        return create_key(conn, name or f"test-{uuid.uuid4().hex[:8]}", scopes)


@dataclass
class LiveApi:
    url: str
    app: object
    cache_dir: Path
    key: str | None = None  # a key with every API scope (None when the DB was unreachable)

    def client(self, key: str | None = "default") -> httpx.Client:
        """An HTTP client sending `key` (default: the all-scopes key; None: no key)."""
        key = self.key if key == "default" else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, trust_env=False, timeout=10, headers=headers)


def api_settings(cache_dir: Path) -> Settings:
    return Settings(
        cache_dir=cache_dir,
        data_dir=cache_dir.parent / "data",
        app_secret=Secret(APP_SECRET),
        webhook_verify_token=Secret(VERIFY_TOKEN),
    )


def run_live(app) -> Iterator[str]:
    """Serve `app` under uvicorn in a thread on an ephemeral loopback port; yield its URL."""
    server = build_server(app, "127.0.0.1", 0, log_level="warning", lifespan="on")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def start_api(dirs):
    """Factory: start an API for a database URL (and optional overrides); stopped at teardown."""
    stack: list[Iterator[str]] = []

    def start(database_url: str, cache_dir: Path | None = None, **options) -> LiveApi:
        cache = cache_dir or dirs["cache"]
        try:
            key = issue_key(database_url)
        except OperationalError:  # a test of an unreachable database
            key = None
        app = create_app(api_settings(cache), database_url=database_url, cache_dir=cache, **options)
        gen = run_live(app)
        url = next(gen)
        stack.append(gen)
        return LiveApi(url, app, cache, key)

    yield start
    for gen in reversed(stack):
        next(gen, None)


@pytest.fixture
def api(clean_db, database_url, start_api) -> LiveApi:
    """The API on the session database (emptied), with a fresh cache folder."""
    return start_api(database_url)


def wait_for_changes(api: LiveApi, engine, timeout: float = 10.0) -> None:
    """Wait until `api`'s process has heard of every change committed so far: its change
    listener has processed their notifications, as any reader would after that short delay.
    (Sequential writes only: it compares the highest txid.)"""
    with engine.connect() as conn:
        last = conn.execute(text("SELECT max(txid)::text FROM change_log")).scalar()
    if last is None:
        return
    recent = api.app.state.cache.recent
    deadline = time.monotonic() + timeout
    while recent.highest_txid < int(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"the API never heard of change {last}")
        time.sleep(0.01)


def closed_port_url() -> str:
    """A PostgreSQL URL on a loopback port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://crm:secret-pw@127.0.0.1:{port}/crm"
