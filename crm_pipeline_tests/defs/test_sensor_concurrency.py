"""Invariant 1 under load: 8 writers commit out of order while the sensor ticks.

Every committed change must reach a run request. The same workload read with a naive
`id > cursor` reader loses changes, which shows the test can fail.
"""

import random
import threading
import time

import dagster as dg
from sqlalchemy import text

from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.resources import PostgresResource

WRITERS = 8
TRANSACTIONS_PER_WRITER = 130


def _writer(engine, seed: int, committed: list[int], lock: threading.Lock, barrier):
    rng = random.Random(seed)
    barrier.wait()
    for n in range(TRANSACTIONS_PER_WRITER):
        with engine.begin() as conn:
            ids = [
                conn.execute(
                    text("INSERT INTO customers (email) VALUES (:e) RETURNING id"),
                    {"e": f"w{seed}-{n}-{k}@x.io"},
                ).scalar_one()
                for k in range(rng.randint(2, 3))
            ]
            # Hold the transaction open a random while: later ids commit first.
            time.sleep(rng.uniform(0, 0.02))
        with lock:
            committed.extend(ids)


def test_every_committed_change_reaches_a_run_and_a_naive_cursor_does_not(clean_db, database_url):
    postgres = PostgresResource(database_url=database_url)
    with dg.build_sensor_context(resources={"postgres": postgres}) as ctx:
        cursor = change_log_sensor(ctx).cursor
    naive_cursor = 0

    committed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WRITERS + 1)
    threads = [
        threading.Thread(target=_writer, args=(clean_db, seed, committed, lock, barrier))
        for seed in range(WRITERS)
    ]
    for t in threads:
        t.start()
    barrier.wait()

    requested: set[int] = set()
    naive_seen: set[int] = set()
    ticks = 0

    def tick():
        nonlocal cursor, naive_cursor, ticks
        ticks += 1
        with dg.build_sensor_context(cursor=cursor, resources={"postgres": postgres}) as ctx:
            result = change_log_sensor(ctx)
        cursor = result.cursor
        for request in result.run_requests:
            ids = request.run_config["ops"]["customer_profiles_cache"]["config"]["customer_ids"]
            assert ids is not None, "small ticks are targeted, not full rebuilds"
            requested.update(ids)
        with clean_db.connect() as conn:
            rows = conn.execute(
                text("SELECT id, customer_id FROM change_log WHERE id > :c ORDER BY id"),
                {"c": naive_cursor},
            ).all()
        if rows:
            naive_cursor = rows[-1].id
            naive_seen.update(r.customer_id for r in rows)

    while any(t.is_alive() for t in threads):
        tick()
    for t in threads:
        t.join()
    tick()  # everything has committed now

    assert len(committed) >= 2000, "thousands of changes"
    assert ticks > 5, "the sensor ticked while writers were committing"
    assert set(committed) <= requested, f"lost {len(set(committed) - requested)} changes"
    lost_by_naive = set(committed) - naive_seen
    assert lost_by_naive, "the naive id cursor should have skipped late commits"
