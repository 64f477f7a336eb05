"""Concurrent writers keep the rollups equal to a full recomputation.

Two connections write the same rollup keys or the same customer in a chosen interleaving: the
second is shown to wait on the first's lock (pg_stat_activity), then both commit and the
rollups are compared with the Python recomputation. Under REPEATABLE READ a writer that would
book under keys its snapshot cannot see fails with a serialization error instead. A last test
runs random writes from several threads at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import Engine, text

from crm_pipeline.db.engine import libpq_url
from crm_pipeline_tests.rollups.expected_rollups import assert_consistent

NEW_ORDER = "INSERT INTO orders (customer_id, amount) VALUES (%s, 12.34)"
RETIER = "UPDATE customers SET tier = 'platinum' WHERE id = %s"
# A lead older than any other of the customer, naming c2: it becomes their first touch.
FIRST_TOUCH = (
    "INSERT INTO leads (id, customer_id, campaign_id, created_time)"
    " VALUES ('X1', %s, 'c2', now() - interval '900 days')"
)
# Settle now (re-key, fold into the totals) instead of at commit, holding the rows it locks.
SETTLE_NOW = "SET CONSTRAINTS rollup_rekey_queue_settle IMMEDIATE"


@pytest.fixture
def connect(database_url):
    """Open psycopg connections to the test database, closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_one(isolation: psycopg.IsolationLevel | None = None) -> psycopg.Connection:
        conn = psycopg.connect(libpq_url(database_url))
        if isolation is not None:
            conn.isolation_level = isolation
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


def _pid(conn: psycopg.Connection) -> int:
    return conn.info.backend_pid


def _in_background(pool: ThreadPoolExecutor, fn: Callable[[], object]) -> Future:
    return pool.submit(fn)


def wait_until_blocked(engine: Engine, pid: int, timeout: float = 10) -> None:
    """Until backend `pid` waits on a lock (proof that the interleaving happened)."""
    deadline = time.monotonic() + timeout
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"pid": pid}).scalar() == "Lock":
                return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


def _run(conn: psycopg.Connection, *statements: str, args: tuple = ()) -> Callable[[], None]:
    def go() -> None:
        for statement in statements:
            conn.execute(statement, args if "%s" in statement else ())

    return go


def _interleave(
    engine,
    first: Callable,
    second: Callable,
    finish_first: Callable,
    finish_second: Callable,
    second_pid: int,
) -> None:
    """`first` runs; `second` runs in the background and must block; `first` finishes; then
    `second` completes and finishes."""  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        first()
        blocked = _in_background(pool, second)
        wait_until_blocked(engine, second_pid)
        finish_first()
        blocked.result(timeout=20)
    finish_second()


@pytest.mark.parametrize("keys_change", [RETIER, FIRST_TOUCH])
def test_an_order_booked_while_the_customer_is_rekeyed_commits_first(
    seeded, people, connect, keys_change
):
    """The order holds the customer's keys row; the re-keying at the other's commit waits for
    it, then moves the order too."""
    a = people[0]
    rekeyer, writer = connect(), connect()
    with ThreadPoolExecutor(1) as pool:
        rekeyer.execute(keys_change, (a,))
        writer.execute(NEW_ORDER, (a,))  # booked under the old keys
        commit = _in_background(pool, rekeyer.commit)
        wait_until_blocked(seeded, _pid(rekeyer))
        writer.commit()
        commit.result(timeout=20)
    assert_consistent(seeded, keys_change)


@pytest.mark.parametrize("keys_change", [RETIER, FIRST_TOUCH])
def test_an_order_waits_for_a_rekeying_in_progress(seeded, people, connect, keys_change):
    """Re-keyed first (the deferred trigger fired early): the order waits for that commit,
    then books under the new keys."""
    a = people[0]
    rekeyer, writer = connect(), connect()
    _interleave(
        seeded,
        _run(rekeyer, keys_change, SETTLE_NOW, args=(a,)),
        _run(writer, NEW_ORDER, args=(a,)),
        rekeyer.commit,
        writer.commit,
        _pid(writer),
    )
    assert_consistent(seeded, keys_change)


NEW_AD = "INSERT INTO ads (id, account_id, campaign_id, adset_id) VALUES ('a9', 'act_1', 'c1', 's')"
LEAD_VIA_AD = (
    "INSERT INTO leads (id, customer_id, ad_id, created_time)"
    " VALUES ('X2', %s, 'a9', now() - interval '900 days')"
)


def test_a_lead_settles_after_the_ad_it_names_commits(seeded, people, connect):
    """The ad is being written: the lead's re-keying at commit waits for it, then reads it."""
    d = people[3]
    ads, leads = connect(), connect()
    ads.execute(NEW_AD)  # holds the ad's row in rollup_ad_campaigns
    leads.execute(LEAD_VIA_AD, (d,))
    with ThreadPoolExecutor(1) as pool:
        commit = _in_background(pool, leads.commit)
        wait_until_blocked(seeded, _pid(leads))
        ads.commit()
        commit.result(timeout=20)
    keys = assert_consistent(seeded)["rollup_customer_keys"]
    assert keys[(d,)][1] == "c1"  # attributed through the ad


def test_an_ad_waits_for_a_lead_settling_through_it(seeded, people, connect):
    """The lead re-keyed first (settled early, the ad not there yet): the ad write waits for
    that commit, then finds the lead and re-keys its customer."""
    d = people[3]
    ads, leads = connect(), connect()
    _interleave(
        seeded,
        _run(leads, LEAD_VIA_AD, SETTLE_NOW, args=(d,)),
        _run(ads, NEW_AD),
        leads.commit,
        ads.commit,
        _pid(ads),
    )
    keys = assert_consistent(seeded)["rollup_customer_keys"]
    assert keys[(d,)][1] == "c1"


def test_writers_of_the_same_rollup_key_do_not_wait_for_each_other(seeded, people, connect):
    """Each writes its own pending rows: the second commits while the first is still open
    (writers commit out of order, as the change log expects: test_change_log.py)."""
    one, two = connect(), connect()
    one.execute(NEW_ORDER, (people[1],))
    one.execute("INSERT INTO customers (email) VALUES ('one@example.com')")
    with ThreadPoolExecutor(1) as pool:
        second = _in_background(
            pool,
            _run(two, NEW_ORDER, "INSERT INTO customers (email) VALUES ('two@example.com')",
                 args=(people[2],)),
        )  # fmt: skip
        try:
            second.result(timeout=5)  # same day, currency, status and tier: no wait
        except TimeoutError:
            one.rollback()  # releases it, so the test ends
            pytest.fail("a writer waited for another's uncommitted rollup rows")
        two.commit()
    one.commit()
    assert_consistent(seeded)


def test_two_settlements_of_the_same_totals_lose_nothing(seeded, people, connect):
    one, two = connect(), connect()
    _interleave(
        seeded,
        _run(one, NEW_ORDER, SETTLE_NOW, args=(people[1],)),  # holds the totals' rows
        _run(two, NEW_ORDER, SETTLE_NOW, args=(people[2],)),
        one.commit,
        two.commit,
        _pid(two),
    )
    assert_consistent(seeded)


def test_a_total_that_reaches_zero_while_another_writer_adds_to_it(seeded, people, connect):
    on_day = "INSERT INTO orders (customer_id, amount, created_at) VALUES (%s, 1.00, '2020-01-01')"
    with connect() as setup:
        setup.execute(on_day, (people[0],))
    deleter, adder = connect(), connect()
    _interleave(
        seeded,
        # count -> 0: the total is deleted
        _run(deleter, "DELETE FROM orders WHERE created_at = '2020-01-01'", SETTLE_NOW),
        _run(adder, on_day, SETTLE_NOW, args=(people[1],)),
        deleter.commit,
        adder.commit,
        _pid(adder),
    )
    rollups = assert_consistent(seeded)
    assert sum(1 for (day, *_) in rollups["rollup_orders_daily"] if day.year == 2020) == 1


@pytest.mark.parametrize("order_first", [True, False])
def test_repeatable_read_writers_fail_rather_than_book_stale_keys(
    seeded, people, connect, order_first
):
    a = people[0]
    # In a currency none of the customer's orders has: the re-keying then shares no rollup
    # total with the order's booking, only the customer's keys row.
    order = "INSERT INTO orders (customer_id, amount, currency) VALUES (%s, 12.34, 'JPY')"
    stale = connect(psycopg.IsolationLevel.REPEATABLE_READ)
    stale.execute("SELECT 1")  # its snapshot, taken before the other writer commits
    with connect() as other:
        other.execute(order if order_first else RETIER, (a,))
    with pytest.raises(errors.SerializationFailure):
        stale.execute(RETIER if order_first else order, (a,))
        stale.commit()  # a tier change re-keys at commit
    stale.rollback()
    assert_consistent(seeded)


def _random_write(conn: psycopg.Connection, rng: random.Random, people: list[int]) -> None:
    who = rng.choice(people[:3])  # few customers: many collisions
    choice = rng.randrange(6)
    if choice == 0:
        conn.execute(RETIER.replace("'platinum'", "%s"), (rng.choice(["gold", "silver"]), who))
    elif choice == 1:
        conn.execute(
            "INSERT INTO leads (id, customer_id, campaign_id, created_time) VALUES"
            " (%s, %s, %s, now() - make_interval(days => %s))",
            (f"S{rng.random()}", who, rng.choice(["c1", "c2", "c3"]), rng.randrange(1, 200)),
        )
    elif choice == 2:
        conn.execute(
            "UPDATE orders SET status = %s WHERE id = (SELECT min(id) FROM orders"
            " WHERE customer_id = %s)",
            (rng.choice(["paid", "refunded"]), who),
        )
    elif choice == 3:
        conn.execute("DELETE FROM orders WHERE id = (SELECT max(id) FROM orders)")
    else:
        conn.execute(NEW_ORDER, (who,))


def test_random_concurrent_writers(seeded, people, database_url):
    failures: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(libpq_url(database_url)) as conn:
            for _ in range(40):
                try:
                    with conn.transaction():
                        for _ in range(rng.randrange(1, 3)):
                            _random_write(conn, rng, people)
                except errors.DeadlockDetected:
                    continue  # PostgreSQL chose this one to abort: nothing was written
                except BaseException as exc:  # reported below
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert_consistent(seeded, "after random concurrent writes")
