"""The worker racing Dagster runs on the same customer file: the file only moves forward."""

import threading

import dagster as dg
from sqlalchemy import text

from crm_pipeline.defs.cache.assets import customer_profiles_cache
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline_tests.cache.worker_helpers import (
    customer_mismatches,
    read_file,
    running_worker,
    wait_for,
)

ROUNDS = 25


def test_worker_and_dagster_runs_never_move_a_file_backwards(clean_db, database_url, dirs):
    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (email, name) VALUES ('r@x.io', 'n0') RETURNING id")
        ).scalar_one()
    path = dirs["cache"] / "customers" / f"{cid}.json"
    resources = {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }
    run_config = {"ops": {"customer_profiles_cache": {"config": {"customer_ids": [cid]}}}}
    stop = threading.Event()
    seen: list[int] = []

    def update():
        n = 0
        while not stop.is_set():
            n += 1
            with clean_db.begin() as conn:
                conn.execute(
                    text("UPDATE customers SET name = :n WHERE id = :c"), {"n": f"n{n}", "c": cid}
                )
            stop.wait(0.003)

    def watch():
        while not stop.is_set():
            doc = read_file(path)
            if doc is not None:
                seen.append(int(doc["watermark"]))

    with running_worker(clean_db, database_url, dirs["cache"], poll_seconds=0.2) as worker:
        wait_for(lambda: worker.active.is_set() and read_file(path))
        threads = [threading.Thread(target=update), threading.Thread(target=watch)]
        for t in threads:
            t.start()
        try:
            for _ in range(ROUNDS):
                result = dg.materialize(
                    [customer_profiles_cache], resources=resources, run_config=run_config
                )
                assert result.success
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        wait_for(lambda: not customer_mismatches(clean_db, dirs["cache"]), timeout=20)
    assert worker.batches > ROUNDS, "the worker wrote the file concurrently with the runs"
    assert len(seen) > 100
    backwards = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b < a]
    assert not backwards, f"the file went back {len(backwards)} times, e.g. {backwards[:3]}"
