"""`crm-pipeline serve` with `CRM_CACHE_URL=s3://bucket/prefix`: HIT, MISS and 304 as with local
files, and the copy it holds served while the store is unreachable."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import text

from crm_pipeline.api.app import create_app
from crm_pipeline.cache import registry
from crm_pipeline.cache.rebuild import rebuild_file, rebuild_index
from crm_pipeline.cache.stores.s3 import S3Store
from crm_pipeline.config import CacheStoreSettings, Secret, Settings
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline_tests.api.conftest import APP_SECRET, VERIFY_TOKEN, issue_key, run_live
from crm_pipeline_tests.object_store.conftest import S3Server, client_for


def _customer(engine, name="Ada", email="ada@example.com") -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (name, email) VALUES (:n, :e) RETURNING id"),
            {"n": name, "e": email},
        ).scalar_one()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@pytest.fixture
def serve_s3(database_url, dirs):
    """Factory: the API (as `crm-pipeline serve` builds it) on `s3://<bucket>/<prefix>` at
    `endpoint`; yields an httpx client with an all-scopes key."""
    import httpx

    running: list[Iterator[str]] = []

    def start(bucket: str, prefix: str, endpoint: str) -> httpx.Client:
        settings = Settings(
            cache_dir=dirs["cache"],
            cache=CacheStoreSettings(url=f"s3://{bucket}/{prefix}", s3_endpoint_url=endpoint),
            data_dir=dirs["data"],
            app_secret=Secret(APP_SECRET),
            webhook_verify_token=Secret(VERIFY_TOKEN),
        )
        live = run_live(create_app(settings, database_url=database_url))
        url = next(live)
        running.append(live)
        headers = {"Authorization": f"Bearer {issue_key(database_url)}"}
        return httpx.Client(base_url=url, headers=headers, trust_env=False, timeout=10)

    yield start
    for live in reversed(running):
        next(live, None)


def _object(server_url: str, bucket: str, key: str) -> dict:
    return client_for(server_url).get_object(Bucket=bucket, Key=key)


def test_objects_are_served_with_etag_and_304_and_a_miss_fills_the_bucket(
    clean_db, s3_server, bucket, serve_s3
):
    cid = _customer(clean_db)
    store = S3Store(bucket, "api", client=client_for(s3_server.url))
    rebuild_file(clean_db, store, registry.MARKETING_INSIGHTS)  # as a run or the worker would
    published = _object(s3_server.url, bucket, "api/marketing/insights.json")["Body"].read()
    with read_snapshot(clean_db) as conn:  # the customer index too: segments and manifest
        rebuild_index(conn, store, None)
    manifest = orjson.loads(
        _object(s3_server.url, bucket, "api/customers/index.json")["Body"].read()
    )
    assert manifest["count"] == 1

    with serve_s3(bucket, "api", s3_server.url) as client:
        hit = client.get("/api/marketing/insights")
        assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
        assert hit.content == published
        assert hit.headers["etag"] == _etag(published)  # a digest of the bytes, as for files
        assert "x-cache-store-unavailable-since" not in hit.headers
        not_modified = client.get(
            "/api/marketing/insights", headers={"If-None-Match": hit.headers["etag"]}
        )
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["x-cache"] == "HIT"
        listed = client.get("/api/customers")  # from the segments in the bucket
        assert listed.headers["x-cache"] == "HIT"
        assert [c["id"] for c in listed.json()["customers"]] == [cid]

        miss = client.get(f"/api/customers/{cid}")
        assert miss.status_code == 200 and miss.headers["x-cache"] == "MISS"
        got = _object(s3_server.url, bucket, f"api/customers/{cid}.json")
        body = got["Body"].read()
        assert body == miss.content
        assert got["Metadata"]["watermark"] == orjson.loads(body)["watermark"]
        again = client.get(f"/api/customers/{cid}", headers={"If-None-Match": _etag(body)})
        assert again.status_code == 304 and again.headers["x-cache"] == "HIT"


def test_an_unreachable_store_leaves_the_api_serving_the_copy_it_holds(clean_db, bucket, serve_s3):
    cid = _customer(clean_db)
    server = S3Server()  # a server of its own, to stop
    client_for(server.url).create_bucket(Bucket=f"{bucket}-own")
    try:
        with serve_s3(f"{bucket}-own", "api", server.url) as client:
            first = client.get(f"/api/customers/{cid}")
            assert first.headers["x-cache"] == "MISS"
            hit = client.get(f"/api/customers/{cid}")
            assert hit.headers["x-cache"] == "HIT"
            listed = client.get("/api/customers")
            assert listed.headers["x-cache"] == "MISS"  # built into the bucket, and memory
            server.stop()

            for _ in range(3):  # the first request finds the store gone, the next skip it
                started = time.monotonic()
                served = client.get(f"/api/customers/{cid}")
                assert time.monotonic() - started < 5
                assert served.status_code == 200 and served.headers["x-cache"] == "HIT"
                assert served.content == hit.content
                assert served.headers["etag"] == hit.headers["etag"]
                assert served.headers["x-cache-store-unavailable-since"]
            revalidated = client.get(
                f"/api/customers/{cid}", headers={"If-None-Match": hit.headers["etag"]}
            )
            assert revalidated.status_code == 304

            # A file it never held: built from the database and served (it cannot be stored).
            insights = client.get("/api/marketing/insights")
            assert insights.status_code == 200 and insights.headers["x-cache"] == "MISS"
            # The customer list is in memory: served, saying the store is gone once the
            # refresh thread has found out.
            deadline = time.monotonic() + 30
            while True:
                page = client.get("/api/customers")
                assert page.status_code == 200
                assert [c["id"] for c in page.json()["customers"]] == [cid]
                if page.headers.get("x-cache-store-unavailable-since"):
                    break
                assert time.monotonic() < deadline, "the store outage was never reported"
                time.sleep(0.2)
    finally:
        server.stop()
