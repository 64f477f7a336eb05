"""The demo's materialisation with `CRM_CACHE_URL=s3://bucket/prefix`: every cache file becomes an
object with its watermark in the object's metadata, and nothing is written to a local folder."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import orjson
from sqlalchemy import text

from crm_pipeline import orchestrate
from crm_pipeline.cache import registry
from crm_pipeline.config import load_settings
from crm_pipeline.defs.cache.checks import cache_lag_checks, summary_matches_schema
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline_tests.defs.test_checks import CACHE_ASSETS, evaluate
from crm_pipeline_tests.object_store.conftest import client_for

SINGLE_FILES = {f.file(): f.schema_version for f in registry.FILES if not f.per_customer}
PROFILE_VERSION = registry.CUSTOMER_PROFILES.schema_version
INDEX_VERSION = registry.CUSTOMER_INDEX.schema_version


def _days(n: int) -> list[str]:
    today = dt.datetime.now(dt.UTC).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in reversed(range(n))]


def test_the_demo_materialisation_writes_every_cache_object_with_its_watermark(
    clean_db, database_url, emulator, dirs, s3_server, bucket, monkeypatch
):
    monkeypatch.setenv("CRM_CACHE_URL", f"s3://{bucket}/crm/cache")
    monkeypatch.setenv("CRM_CACHE_S3_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("CRM_CACHE_DIR", str(dirs["cache"]))
    monkeypatch.setenv("CRM_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("CRM_DATABASE_URL", database_url)
    settings = load_settings()
    seed_demo_crm(clean_db)
    # As `crm-pipeline demo` does: the standard resources, a sync of recent days, the caches.
    graph = GraphApiResource(graph_url=emulator.url, ad_account_ids="act_1001,act_1002")
    report = orchestrate.sync_facebook(
        _days(2),
        resources=orchestrate.standard_resources(settings, graph),
        instance=dg.DagsterInstance.ephemeral(),
        database_url=database_url,
    )

    root = f"s3://{bucket}/crm/cache"
    assert report.cache_files == {
        "marketing_insights_cache": f"{root}/marketing/insights.json",
        "customer_index_cache": f"{root}/customers/index",
        "customer_profiles_cache": f"{root}/customers",
        "analytics_summary": f"{root}/analytics/summary.json",
    }
    with clean_db.connect() as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all()
        watermark = conn.execute(text("SELECT max(txid)::text FROM change_log")).scalar_one()
    assert ids
    expected = {
        **SINGLE_FILES,
        **{f"customers/{cid}.json": PROFILE_VERSION for cid in ids},
        **{registry.CUSTOMER_INDEX.file(cid): INDEX_VERSION for cid in ids},  # their segments
    }
    client = client_for(s3_server.url)
    listed = client.list_objects_v2(Bucket=bucket, Prefix="crm/cache/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"crm/cache/{k}" for k in expected)
    for relative, schema_version in expected.items():
        got = client.get_object(Bucket=bucket, Key=f"crm/cache/{relative}")
        document = orjson.loads(got["Body"].read())
        assert got["ContentType"] == "application/json"
        assert got["Metadata"] == {
            "watermark": document["watermark"],
            "schema-version": str(schema_version),
        }, relative
        assert document["schema_version"] == schema_version and document["generated_at"]
        # Built after every change so far: the watermark is past the last change.
        assert int(document["watermark"]) > int(watermark)
    assert list(dirs["cache"].iterdir()) == []  # the local folder is not used

    # The asset checks read the same objects: none is missing, behind, or off its schema.
    resources = orchestrate.standard_resources(settings, graph)
    checks = evaluate(CACHE_ASSETS, [cache_lag_checks, summary_matches_schema], resources)
    assert len(checks) == 5 and all(c.passed for c in checks.values()), checks
