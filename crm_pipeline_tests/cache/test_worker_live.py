"""The cache worker against a real PostgreSQL: changes from any client reach their files."""

import random
import time

import psycopg
from sqlalchemy import text

from crm_pipeline.cache.registry import ANALYTICS_SUMMARY, CUSTOMER_INDEX
from crm_pipeline.db.engine import libpq_url
from crm_pipeline_tests.cache.worker_helpers import (
    customer_mismatches,
    index_count,
    index_matches,
    read_file,
    running_worker,
    stored_watermark,
    wait_for,
)

WRITERS = 8


def _customer(engine, email, name="Someone"):
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (email, name) VALUES (:e, :n) RETURNING id"),
            {"e": email, "n": name},
        ).scalar_one()


def test_a_psql_style_update_reaches_the_customer_file(clean_db, database_url, dirs):
    cid = _customer(clean_db, "a@x.io", "Old Name")
    path = dirs["cache"] / "customers" / f"{cid}.json"
    with running_worker(clean_db, database_url, dirs["cache"]) as worker:
        wait_for(lambda: worker.active.is_set())
        # The catch-up read from an empty state finds the insert made before the worker ran.
        wait_for(lambda: (read_file(path) or {}).get("customer", {}).get("name") == "Old Name")
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute("UPDATE customers SET name = 'New Name' WHERE id = %s", (cid,))
        started = time.monotonic()
        wait_for(lambda: read_file(path)["customer"]["name"] == "New Name", timeout=10, every=0.005)
        # A notification, not the 0.5 s backstop poll, woke it up.
        assert time.monotonic() - started < 0.45


def test_out_of_order_commits_of_concurrent_writers_all_reach_their_files(
    clean_db, database_url, dirs
):
    rng = random.Random(7)
    ids = [_customer(clean_db, f"c{i}@x.io") for i in range(WRITERS * 2)]
    conninfo = libpq_url(database_url)
    writers = [psycopg.connect(conninfo) for _ in range(WRITERS)]
    try:
        with running_worker(clean_db, database_url, dirs["cache"]) as worker:
            wait_for(lambda: worker.active.is_set())
            for round_ in range(12):
                # Each writer opens a transaction (txids in opening order) on its own customer
                # (a shared row would make one writer wait for another) ...
                for n, (conn, cid) in enumerate(
                    zip(writers, rng.sample(ids, WRITERS), strict=True)
                ):
                    conn.execute(
                        "UPDATE customers SET name = %s WHERE id = %s", (f"r{round_}w{n}", cid)
                    )
                    conn.execute(
                        "INSERT INTO orders (customer_id, amount) VALUES (%s, %s)",
                        (cid, rng.randint(1, 500)),
                    )
                    if n % 3 == 0:
                        conn.execute(
                            "INSERT INTO customers (email, name) VALUES (%s, %s)",
                            (f"new-{round_}-{n}@x.io", f"New {round_}/{n}"),
                        )
                # ... and they commit newest first, or shuffled: later txids commit earlier.
                order = list(reversed(writers)) if round_ % 2 else rng.sample(writers, WRITERS)
                for conn in order:
                    conn.commit()
                    time.sleep(rng.uniform(0, 0.01))
            wait_for(lambda: not customer_mismatches(clean_db, dirs["cache"]), timeout=30)
            wait_for(lambda: index_matches(clean_db, dirs["cache"]), timeout=30)
            assert index_count(dirs["cache"]) == WRITERS * 2 + 12 * len(range(0, WRITERS, 3))
    finally:
        for conn in writers:
            conn.close()


def test_a_deferred_summary_holds_the_watermark_but_the_index_segment_does_not_wait(
    clean_db, database_url, dirs
):
    cid = _customer(clean_db, "d@x.io")
    summary = dirs["cache"] / ANALYTICS_SUMMARY.file()
    segment = dirs["cache"] / CUSTOMER_INDEX.file(cid)
    profile = dirs["cache"] / "customers" / f"{cid}.json"
    with running_worker(
        clean_db, database_url, dirs["cache"], coalesce_seconds=3.0, poll_seconds=60
    ) as worker:
        wait_for(lambda: worker.active.is_set())
        wait_for(lambda: read_file(summary))  # built now: never built before
        wait_for(lambda: index_matches(clean_db, dirs["cache"]))
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET name = 'Deferred' WHERE id = :c"), {"c": cid})
            txid = int(conn.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())
        wait_for(lambda: read_file(profile)["customer"]["name"] == "Deferred", timeout=5)
        # The customer's index segment is rewritten with its 360 file, in the same batch ...
        assert int(read_file(segment)["watermark"]) > txid
        assert index_matches(clean_db, dirs["cache"])
        time.sleep(0.5)  # ... while the summary, several beats later, is still owed
        assert int(read_file(summary)["watermark"]) <= txid
        assert int(stored_watermark(clean_db)) <= txid, "the watermark passed an owed file"
        wait_for(lambda: int(read_file(summary)["watermark"]) > txid, timeout=10)
        wait_for(lambda: int(stored_watermark(clean_db) or 0) > txid, timeout=5)


def test_the_worker_survives_its_connections_being_killed(clean_db, database_url, dirs):
    cid = _customer(clean_db, "k@x.io", "Before")
    path = dirs["cache"] / "customers" / f"{cid}.json"
    with running_worker(clean_db, database_url, dirs["cache"]) as worker:
        wait_for(lambda: worker.active.is_set())
        wait_for(lambda: read_file(path))
        with clean_db.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'crm-cache-worker'"
                )
            ).scalar_one()
        assert killed == 1
        # Written while the worker is disconnected: its catch-up read finds it.
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET name = 'After' WHERE id = :c"), {"c": cid})
        wait_for(lambda: read_file(path)["customer"]["name"] == "After", timeout=15)
        wait_for(lambda: worker.active.is_set())
