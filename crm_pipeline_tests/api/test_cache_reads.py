"""Cache-first reads: MISS builds and writes, HIT with ETag/304, STALE refreshes, DB down.

Hits answered without the database (the change listener) are tested in test_hits_without_db.py.
"""

from __future__ import annotations

import json
import logging
import time

from sqlalchemy import text

from crm_pipeline.cachefile import read_json
from crm_pipeline_tests.api.conftest import APP_SECRET, closed_port_url, wait_for_changes


def _customer(engine, name="Ada", email="ada@example.com") -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (name, email) VALUES (:n, :e) RETURNING id"),
            {"n": name, "e": email},
        ).scalar_one()


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_miss_builds_file_then_hit_with_etag_and_304(api, clean_db):
    cid = _customer(clean_db)
    path = api.cache_dir / "customers" / f"{cid}.json"
    with api.client() as client:
        miss = client.get(f"/api/customers/{cid}")
        assert miss.status_code == 200
        assert miss.headers["x-cache"] == "MISS"
        assert path.exists()
        document = read_json(path)
        assert {"generated_at", "watermark", "schema_version"} <= document.keys()
        assert miss.json()["customer"]["email"] == "ada@example.com"

        hit = client.get(f"/api/customers/{cid}")
        assert hit.headers["x-cache"] == "HIT"
        assert hit.headers["etag"] == miss.headers["etag"]
        assert miss.headers["cache-control"] == "private, no-cache"
        assert hit.headers["cache-control"] == "private, no-cache"  # the browser revalidates
        assert int(hit.headers["age"]) >= 0
        assert hit.content == path.read_bytes()

        not_modified = client.get(
            f"/api/customers/{cid}", headers={"If-None-Match": hit.headers["etag"]}
        )
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert not_modified.headers["etag"] == hit.headers["etag"]
        assert not_modified.headers["cache-control"] == "private, no-cache"
        other = client.get(f"/api/customers/{cid}", headers={"If-None-Match": '"nope"'})
        assert other.status_code == 200

        missing = client.get("/api/customers/424242")
        assert missing.status_code == 404
        assert not (api.cache_dir / "customers" / "424242.json").exists()


def test_every_cached_route_fills_its_file(api, clean_db):
    _customer(clean_db)
    files = {
        "/api/customers": "customers/index.json",
        "/api/analytics/summary": "analytics/summary.json",
        "/api/marketing/insights": "marketing/insights.json",
    }
    with api.client() as client:
        for route, relative in files.items():
            first = client.get(route)
            assert first.status_code == 200, (route, first.text)
            assert first.headers["x-cache"] == "MISS"
            assert (api.cache_dir / relative).exists()
            assert client.get(route).headers["x-cache"] == "HIT"
    assert json.loads((api.cache_dir / "customers/index.json").read_bytes())["count"] == 1


def test_write_makes_file_stale_served_then_refreshed_in_background(api, clean_db):
    cid = _customer(clean_db)
    other = _customer(clean_db, "Bo", "bo@example.com")
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        assert client.get(f"/api/customers/{other}").headers["x-cache"] == "MISS"
        old = client.get(f"/api/customers/{cid}")
        # Another client's write (psql, the sync): served STALE once the API has heard of it.
        # (A write through this API is read back at once instead: test_hits_without_db.py.)
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id = :i"), {"i": cid})
        wait_for_changes(api, clean_db)

        stale = client.get(f"/api/customers/{cid}")
        assert stale.headers["x-cache"] == "STALE"
        assert stale.json()["customer"]["tier"] == "standard"  # served at once, as it was
        assert stale.headers["cache-control"] == "private, no-cache"
        # Another customer's change does not make this customer's file stale.
        assert client.get(f"/api/customers/{other}").headers["x-cache"] == "HIT"

        def refreshed():
            response = client.get(f"/api/customers/{cid}")
            return response.headers["x-cache"] == "HIT" and (
                response.json()["customer"]["tier"] == "gold"
            )

        assert _wait_for(refreshed)
        assert client.get(f"/api/customers/{cid}").headers["etag"] != old.headers["etag"]


def test_ttl_expiry_marks_stale(clean_db, database_url, start_api):
    api = start_api(database_url, cache_ttl_seconds=0)
    with api.client() as client:
        assert client.get("/api/customers").headers["x-cache"] == "MISS"
        assert client.get("/api/customers").headers["x-cache"] == "STALE"


def test_database_down_serves_cached_keys_and_refuses_the_rest(api, clean_db, start_api, caplog):
    caplog.set_level(logging.DEBUG)
    cid = _customer(clean_db)
    with api.client() as client:
        for route in (f"/api/customers/{cid}", "/api/customers", "/api/analytics/summary"):
            assert client.get(route).status_code == 200

    down = start_api(closed_port_url(), cache_dir=api.cache_dir)
    with down.client(api.key) as client:  # the key it knew, from the snapshot
        for route in (f"/api/customers/{cid}", "/api/customers", "/api/analytics/summary"):
            response = client.get(route)
            assert response.status_code == 200, route
            assert response.headers["x-cache"] == "STALE"
            assert response.headers["x-stale-since"]
            assert response.headers["x-database-unavailable-since"]
            assert response.headers["etag"]

        miss = client.get("/api/marketing/insights")
        assert miss.status_code == 503
        assert miss.headers["content-type"] == "application/problem+json"
        assert miss.headers["retry-after"]
        write = client.post("/api/customers", json={"name": "Z"})
        assert write.status_code == 503
        assert "secret-pw" not in write.text
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["database"] == "down"
    assert "secret-pw" not in caplog.text
    assert APP_SECRET not in caplog.text


def test_deleted_customer_file_is_dropped_by_the_refresh(api, clean_db):
    cid = _customer(clean_db)
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        with clean_db.begin() as conn:
            conn.execute(text("DELETE FROM customers WHERE id = :id"), {"id": cid})
        wait_for_changes(api, clean_db)
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "STALE"
        assert _wait_for(lambda: client.get(f"/api/customers/{cid}").status_code == 404)
    assert not (api.cache_dir / "customers" / f"{cid}.json").exists()


def test_a_hit_is_never_behind_a_committed_write_under_concurrent_reads(api, clean_db):
    """Without the change listener, cache hits share one change-log check per batch of waiting
    requests. Each request must still be answered from a snapshot taken after it arrived:
    whatever batch it lands in, a read that follows a commit never gets a HIT with the old
    data."""
    import threading

    api.app.state.changes.stop()  # the database fallback (listener down)
    target = _customer(clean_db, name="v0", email="target@example.com")
    others = [_customer(clean_db, name=f"o{i}", email=f"o{i}@example.com") for i in range(12)]
    stop = threading.Event()
    background_hits = []

    def hammer(ids):
        with api.client() as client:
            while not stop.is_set():
                for cid in ids:
                    response = client.get(f"/api/customers/{cid}")
                    background_hits.append(response.headers["x-cache"] == "HIT")

    with api.client() as client:
        for cid in [target, *others]:
            assert client.get(f"/api/customers/{cid}").status_code == 200
        threads = [threading.Thread(target=hammer, args=(others[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for i in range(1, 31):
                with clean_db.begin() as conn:
                    conn.execute(
                        text("UPDATE customers SET name = :n WHERE id = :i"),
                        {"n": f"v{i}", "i": target},
                    )
                response = client.get(f"/api/customers/{target}")
                if response.headers["x-cache"] == "HIT":
                    # A hit is only allowed when the file already reflects the write.
                    assert response.json()["customer"]["name"] == f"v{i}", i
                else:
                    assert response.headers["x-cache"] == "STALE", response.headers
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert sum(background_hits) > 100  # the batches really were shared with other requests


def test_a_dropped_check_connection_is_replaced_without_an_outage(api, clean_db):
    """The change-log check keeps one connection open; when the server drops it (restart, idle
    timeout), the next hit reconnects and answers normally instead of reporting an outage."""
    api.app.state.changes.stop()  # hits use the change-log check (listener down)
    cid = _customer(clean_db)
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "HIT"  # opens it
        with clean_db.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 1
        hit = client.get(f"/api/customers/{cid}")
        assert hit.headers["x-cache"] == "HIT"
        assert "x-database-unavailable-since" not in hit.headers
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET name = 'Eve' WHERE id = :i"), {"i": cid})
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "STALE"


def test_a_replaced_file_is_served_as_it_is_now_not_as_remembered(api, clean_db):
    """Hits keep the file in memory while its stat signature holds; a publish renames a new
    inode into place, and the next hit serves the new bytes (here: same size, same second)."""
    from crm_pipeline.cache.publish import publish_document

    cid = _customer(clean_db)
    path = api.cache_dir / "customers" / f"{cid}.json"
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        for n in range(20):
            document = read_json(path)
            document["customer"]["name"] = f"Ada {n:02d}"  # same length every time
            publish_document(path, document)
            hit = client.get(f"/api/customers/{cid}")
            assert hit.headers["x-cache"] == "HIT"
            assert hit.content == path.read_bytes()
            assert hit.json()["customer"]["name"] == f"Ada {n:02d}"
