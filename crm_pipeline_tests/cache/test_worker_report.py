"""Batches reach the Dagster instance as runless materializations, and reporting never blocks."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.cache.customer_index import segment_of
from crm_pipeline.cache.registry import ANALYTICS_SUMMARY, CUSTOMER_INDEX, CUSTOMER_PROFILES
from crm_pipeline.cache.worker.batch import FileReport
from crm_pipeline.defs.cache.worker_report import DagsterReporter, materialization
from crm_pipeline_tests.cache.worker_helpers import read_file, running_worker, wait_for

CLI = str(Path(sys.executable).with_name("crm-pipeline"))


def _metadata(instance, asset):
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return [r.asset_materialization.metadata for r in records]


def test_batches_land_in_the_dagster_instance_with_their_metadata(clean_db, database_url, dirs):
    with clean_db.begin() as conn:
        cid = conn.execute(
            text(
                "INSERT INTO customers (email, name) VALUES ('m@x.io', 'Quentin Zyx') RETURNING id"
            )
        ).scalar_one()
    instance = dg.DagsterInstance.ephemeral()
    reporter = DagsterReporter(instance)
    with running_worker(clean_db, database_url, dirs["cache"], reporter=reporter) as worker:
        wait_for(lambda: worker.active.is_set() and _metadata(instance, CUSTOMER_PROFILES.asset))
        with clean_db.begin() as conn:
            conn.execute(
                text("INSERT INTO orders (customer_id, amount) VALUES (:c, 42)"), {"c": cid}
            )

        def profile_event():
            for meta in _metadata(instance, CUSTOMER_PROFILES.asset):
                if "commit_to_file_ms" in meta:
                    return meta
            return None

        meta = wait_for(profile_event)
        wait_for(lambda: len(_metadata(instance, CUSTOMER_INDEX.asset)) >= 2)
        wait_for(lambda: len(_metadata(instance, ANALYTICS_SUMMARY.asset)) >= 2)
    reporter.close()
    assert meta["customer_ids"].value == [cid]
    assert meta["files"].value == 1 and meta["mode"].value == "targeted"
    assert 0 <= meta["commit_to_file_ms"].value < 5000
    path = dirs["cache"] / "customers" / f"{cid}.json"
    assert meta["watermark"].value == read_file(path)["watermark"]
    index = _metadata(instance, CUSTOMER_INDEX.asset)[0]  # newest first
    assert (
        index["watermark"].value == read_file(dirs["cache"] / CUSTOMER_INDEX.file(cid))["watermark"]
    )
    # Only the customer's segment, with what it cost.
    assert index["mode"].value == "targeted" and index["customer_ids"].value == [cid]
    assert index["segments"].value == [segment_of(cid)] and index["bytes"].value > 0
    reported = repr(_metadata(instance, CUSTOMER_PROFILES.asset))
    assert "Zyx" not in reported and "m@x.io" not in reported  # no personal data


def test_large_batches_report_a_count_not_the_ids():
    many = FileReport(
        asset=CUSTOMER_PROFILES.asset,
        path="/c",
        watermark="7",
        mode="targeted",
        written=150,
        customer_ids=tuple(range(150)),
        customers=150,
    )
    meta = materialization(many).metadata
    assert "customer_ids" not in meta and meta["customers"].value == 150


def test_a_broken_instance_does_not_stop_the_files(clean_db, database_url, dirs):
    def broken():
        raise RuntimeError("instance down")

    reporter = DagsterReporter(broken)
    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (email, name) VALUES ('b@x.io', 'One') RETURNING id")
        ).scalar_one()
    path = dirs["cache"] / "customers" / f"{cid}.json"
    with running_worker(clean_db, database_url, dirs["cache"], reporter=reporter) as worker:
        wait_for(lambda: worker.active.is_set() and read_file(path))
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET name = 'Two' WHERE id = :c"), {"c": cid})
        wait_for(lambda: read_file(path)["customer"]["name"] == "Two")
    reporter.close()
    assert reporter.reported == 0


@pytest.mark.slow
def test_the_cli_worker_reports_to_the_instance_in_dagster_home(
    clean_db, database_url, dirs, tmp_path
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (email) VALUES ('h@x.io') RETURNING id")
        ).scalar_one()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    env = {
        **base,
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(dirs["cache"]),
        "CRM_DATA_DIR": str(dirs["data"]),
        "DAGSTER_HOME": str(home),
    }
    worker = subprocess.Popen(
        [CLI, "cache-worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: read_file(dirs["cache"] / "customers" / f"{cid}.json"), timeout=60)
        worker.send_signal(signal.SIGTERM)  # queued reports are sent before it exits
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        meta = _metadata(instance, CUSTOMER_PROFILES.asset)
    assert meta and meta[0]["customer_ids"].value == [cid]
