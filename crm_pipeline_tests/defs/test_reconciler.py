"""The change-log sensor as the reconciler behind the cache worker (issue 14).

The worker is simulated by writing its `cache_worker_state` row the way it does (`beat`):
a watermark below which every change has reached its files, and a heartbeat. A worker is made
dead by ageing its heartbeat past `CRM_CACHE_WORKER_STALE_SECONDS`.

- live worker: the sensor requests nothing and moves its cursor up to the worker's watermark;
- dead worker: one run of exactly the changes at or past the watermark, none below it;
- no worker row: the sensor does all the work itself;
- a worker that dies mid-stream, under concurrent writers committing out of order: every
  committed change is either below the worker's last watermark or in a sensor run, and no run
  covers a change below it.
"""

import json
import random
import threading
import time

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.config import load_settings
from crm_pipeline.db.changelog import safe_upper_bound
from crm_pipeline.db.worker_state import beat
from crm_pipeline.defs.cache.sensors import RECONCILE_TAG, change_log_sensor, later_watermark
from crm_pipeline.defs.resources import PostgresResource

WORKER = load_settings().worker.name


def _tick(database_url, cursor=None):
    with dg.build_sensor_context(
        cursor=cursor, resources={"postgres": PostgresResource(database_url=database_url)}
    ) as context:
        return change_log_sensor(context)


def _profile_ids(request) -> list[int]:
    return request.run_config["ops"]["customer_profiles_cache"]["config"]["customer_ids"]


def _customer(engine, email: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (email) VALUES (:e) RETURNING id"), {"e": email}
        ).scalar_one()


def _worker_done_up_to_now(engine, name: str = WORKER) -> str:
    """The worker covered everything committed so far: its watermark is the safe bound."""
    with engine.begin() as conn:
        watermark = safe_upper_bound(conn)
        beat(conn, name, watermark)
    return watermark


def _kill_worker(engine, name: str = WORKER) -> None:
    """Its last heartbeat is older than the threshold (the DB clock decides, as in production)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE cache_worker_state SET heartbeat_at = clock_timestamp() - interval '1 hour'"
                " WHERE name = :n"
            ),
            {"n": name},
        )


def _upto(result) -> str | None:
    return json.loads(result.cursor)["upto"] if result.cursor else None


def test_later_watermark_compares_xids_as_numbers():
    assert later_watermark("9", "10") == "10"  # not text order
    assert later_watermark(None, "5") == later_watermark("5", None) == "5"
    assert later_watermark(None, None) is None


def test_a_live_worker_gets_no_run_and_the_cursor_follows_its_watermark(clean_db, database_url):
    start = _tick(database_url)
    _customer(clean_db, "a@x.io")
    watermark = _worker_done_up_to_now(clean_db)

    live = _tick(database_url, start.cursor)
    assert not live.run_requests
    assert "alive" in live.skip_reason.skip_message and WORKER in live.skip_reason.skip_message
    assert _upto(live) == watermark

    # A change the live worker has not reached yet is still its job, not a run's: the cursor
    # stays at the worker's watermark so that, should the worker die, the change is not lost.
    late = _customer(clean_db, "b@x.io")
    behind = _tick(database_url, live.cursor)
    assert not behind.run_requests
    assert _upto(behind) == watermark

    _kill_worker(clean_db)
    takeover = _tick(database_url, behind.cursor)
    [request] = takeover.run_requests
    assert _profile_ids(request) == [late]
    assert request.tags[RECONCILE_TAG] == "worker down"


def test_a_dead_worker_leaves_exactly_the_changes_past_its_watermark(clean_db, database_url):
    start = _tick(database_url)  # the sensor's cursor is older than anything below
    done = [_customer(clean_db, f"done{i}@x.io") for i in range(3)]
    watermark = _worker_done_up_to_now(clean_db)
    left = [_customer(clean_db, f"left{i}@x.io") for i in range(2)]
    _kill_worker(clean_db)

    tick = _tick(database_url, start.cursor)
    [request] = tick.run_requests
    assert _profile_ids(request) == left, f"{done} were done by the worker"
    assert request.tags["crm/change_window"].startswith(f"{watermark}..")
    assert int(_upto(tick)) > int(watermark)
    assert not _tick(database_url, tick.cursor).run_requests  # delivered once


def test_without_any_worker_the_sensor_does_all_the_work(clean_db, database_url):
    start = _tick(database_url)
    ids = [_customer(clean_db, f"c{i}@x.io") for i in range(2)]
    [request] = _tick(database_url, start.cursor).run_requests
    assert _profile_ids(request) == ids
    assert request.tags[RECONCILE_TAG] == "no worker"


def test_another_workers_heartbeat_does_not_count(clean_db, database_url):
    start = _tick(database_url)
    cid = _customer(clean_db, "o@x.io")
    _worker_done_up_to_now(clean_db, name=f"{WORKER}-elsewhere")
    [request] = _tick(database_url, start.cursor).run_requests
    assert _profile_ids(request) == [cid]


def test_stale_threshold_comes_from_the_settings(clean_db, database_url, monkeypatch):
    start = _tick(database_url)
    _customer(clean_db, "s@x.io")
    _worker_done_up_to_now(clean_db)
    _customer(clean_db, "t@x.io")
    monkeypatch.setenv("CRM_CACHE_WORKER_STALE_SECONDS", "1")
    time.sleep(1.2)
    assert _tick(database_url, start.cursor).run_requests  # 1.2 s old: dead under a 1 s rule
    monkeypatch.setenv("CRM_CACHE_WORKER_STALE_SECONDS", "60")
    assert not _tick(database_url, start.cursor).run_requests


WRITERS = 6
TRANSACTIONS_PER_WRITER = 60


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
                for k in range(rng.randint(1, 3))
            ]
            time.sleep(rng.uniform(0, 0.02))  # later ids commit first
        with lock:
            committed.extend(ids)


def _start_writers(engine, committed: list[int]) -> list[threading.Thread]:
    """WRITERS threads inserting customers concurrently, released together."""
    lock = threading.Lock()
    barrier = threading.Barrier(WRITERS + 1)
    threads = [
        threading.Thread(target=_writer, args=(engine, seed, committed, lock, barrier))
        for seed in range(WRITERS)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    return threads


def _customers_done_by_worker(engine) -> set[int]:
    """The customers whose changes lie below the (dead) worker's last watermark."""
    with engine.connect() as conn:
        final = conn.execute(
            text("SELECT watermark FROM cache_worker_state WHERE name = :n"), {"n": WORKER}
        ).scalar_one()
        return set(
            conn.execute(
                text(
                    "SELECT customer_id FROM change_log"
                    " WHERE txid < CAST(:w AS xid8) AND customer_id IS NOT NULL"
                ),
                {"w": final},
            ).scalars()
        )


@pytest.mark.parametrize("dies_after_steps", [3, 12])
def test_a_worker_dying_mid_stream_loses_nothing_and_duplicates_nothing(
    clean_db, database_url, dies_after_steps
):
    cursor = _tick(database_url).cursor
    committed: list[int] = []
    threads = _start_writers(clean_db, committed)
    requested: list[int] = []
    runs_while_alive = 0
    step = 0

    def tick(alive: bool):
        nonlocal cursor, runs_while_alive
        result = _tick(database_url, cursor)
        cursor = result.cursor
        runs_while_alive += alive and len(result.run_requests)
        for request in result.run_requests:
            requested.extend(_profile_ids(request))

    while any(t.is_alive() for t in threads):
        step += 1
        alive = step <= dies_after_steps
        if alive and step % 2:  # the worker lags the sensor's ticks by a step or so
            _worker_done_up_to_now(clean_db)
        elif step == dies_after_steps + 1:
            _kill_worker(clean_db)
        tick(alive)
        time.sleep(0.01)
    for t in threads:
        t.join()
    if step <= dies_after_steps:
        _kill_worker(clean_db)
    tick(False)  # everything has committed now

    by_worker = _customers_done_by_worker(clean_db)
    assert len(committed) >= 300
    assert by_worker, "the worker did some of the work before it died"
    assert runs_while_alive == 0, "no run while the worker was alive"
    assert len(requested) == len(set(requested)), "each change in one run only"
    assert not by_worker & set(requested), "a run for work the worker had done"
    lost = set(committed) - by_worker - set(requested)
    assert not lost, f"lost {len(lost)} changes"
