"""Cache hits answered from memory (issue 14): no SQL per hit, writes seen as soon as notified,
read-your-writes for the API's own writes, and the database fallback while the change listener
is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvloop
from sqlalchemy import event, text
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crm_pipeline.api.change_listener import APPLICATION_NAME
from crm_pipeline.api.server import build_server
from crm_pipeline.cache import registry
from crm_pipeline.cache.rebuild import rebuild_file, rebuild_index
from crm_pipeline.cache.recent_changes import Change, RecentChanges
from crm_pipeline.cachefile import read_json
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline_tests.api.conftest import wait_for_changes

ROUTES = ("/api/customers", "/api/analytics/summary", "/api/marketing/insights")


def _customer(engine, name="Ada", email=None) -> int:
    # As psql or another app would: seen by the API only through the change log.
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (name, email) VALUES (:n, :e) RETURNING id"),
            {"n": name, "e": email or f"{name.lower()}@example.com"},
        ).scalar_one()


def _rename(engine, cid: int, name: str) -> int:
    """Another client's write; returns its txid."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE customers SET name = :n WHERE id = :i"), {"n": name, "i": cid})
        return int(conn.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())


def _wait_for(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@contextmanager
def counting_sql(app) -> Iterator[list[str]]:
    """Every statement the app's engine sends, and every pool checkout (a liveness ping)."""
    engine = app.state.db.engine()
    sent: list[str] = []

    def on_execute(conn, cursor, statement, *args) -> None:
        sent.append(statement)

    def on_checkout(*args) -> None:
        sent.append("<pool checkout>")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "checkout", on_checkout)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "checkout", on_checkout)


def _listener_backend(engine) -> tuple[int, object] | None:
    """(pid, state_change) of the API's listener connection, as the server sees it."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT pid, state_change FROM pg_stat_activity"
                " WHERE application_name = :a AND datname = current_database()"
            ),
            {"a": APPLICATION_NAME},
        ).first()
    return (row.pid, row.state_change) if row else None


def _name(response) -> str:
    return response.json()["customer"]["name"]


def test_a_hit_sends_nothing_to_the_database(api, clean_db):
    cid = _customer(clean_db)
    unknown = 987654
    with api.client() as client:
        for route in (*ROUTES, f"/api/customers/{cid}"):
            assert client.get(route).headers["x-cache"] == "MISS"
        assert client.get(f"/api/customers/{unknown}").status_code == 404  # remembered
        etag = client.get(f"/api/customers/{cid}").headers["etag"]
        listener = _listener_backend(clean_db)
        assert listener is not None

        with counting_sql(api.app) as sent:
            for _ in range(25):
                for route in (*ROUTES, f"/api/customers/{cid}"):
                    assert client.get(route).headers["x-cache"] == "HIT", route
                revalidated = client.get(f"/api/customers/{cid}", headers={"If-None-Match": etag})
                assert revalidated.status_code == 304
                assert client.get(f"/api/customers/{unknown}").status_code == 404
        assert sent == []
        # The listener's connection did nothing either (same backend, no statement since).
        assert _listener_backend(clean_db) == listener

        # Database side: with change_log locked, any change-log check would block; hits don't.
        with clean_db.connect() as locker:
            locker.execute(text("LOCK TABLE change_log IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            for route in (*ROUTES, f"/api/customers/{cid}"):
                response = client.get(route, timeout=3)
                assert response.headers["x-cache"] == "HIT", route
            assert time.monotonic() - started < 3
            locker.rollback()


def test_a_file_written_elsewhere_is_checked_once_then_answered_from_memory(
    clean_db, database_url, start_api
):
    _customer(clean_db)
    api = start_api(database_url)
    # Written by someone else (the worker, a Dagster run) from changes older than the API's
    # listener: memory cannot vouch for it until one change-log check has.
    rebuild_file(clean_db, api.cache_dir, registry.MARKETING_INSIGHTS)
    watermark = int(read_json(api.cache_dir / "marketing/insights.json")["watermark"])
    assert watermark < api.app.state.cache.recent.floor
    with api.client() as client:
        with counting_sql(api.app) as first:
            assert client.get("/api/marketing/insights").headers["x-cache"] == "HIT"
        assert any("WITH ORDINALITY" in s for s in first)  # the change-log check
        with counting_sql(api.app) as later:
            for _ in range(20):
                assert client.get("/api/marketing/insights").headers["x-cache"] == "HIT"
        assert later == []


def test_index_segments_written_elsewhere_are_checked_once_then_answered_from_memory(
    clean_db, database_url, start_api
):
    _customer(clean_db)
    api = start_api(database_url)
    # Segments written by someone else from changes older than the API's listener: memory
    # cannot vouch for them until one change-log check has (the request's, or the refresh
    # thread's), and after that, pages cost no SQL.
    with read_snapshot(clean_db) as conn:
        rebuild_index(conn, api.cache_dir, None)
    watermark = int(read_json(api.cache_dir / registry.CUSTOMER_INDEX.file())["watermark"])
    assert watermark < api.app.state.cache.recent.floor
    with api.client() as client:
        first = client.get("/api/customers")
        assert first.headers["x-cache"] == "HIT"  # found, not built again
        assert [c["name"] for c in first.json()["customers"]] == ["Ada"]
        with counting_sql(api.app) as later:
            for _ in range(20):
                assert client.get("/api/customers", params={"q": "ad"}).headers["x-cache"] == "HIT"
        assert later == []


def test_another_clients_write_is_seen_once_notified(api, clean_db):
    cid = _customer(clean_db, "Ada")
    with api.client() as client:
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "HIT"
        _rename(clean_db, cid, "Ada Lovelace")

        def noticed():
            response = client.get(f"/api/customers/{cid}")
            return response.headers["x-cache"] != "HIT" or _name(response) != "Ada"

        assert _wait_for(noticed)  # within the notification delay
        # Once the notification is processed, never again the old body as a HIT.
        wait_for_changes(api, clean_db)
        for _ in range(20):
            after = client.get(f"/api/customers/{cid}")
            assert after.headers["x-cache"] != "HIT" or _name(after) == "Ada Lovelace"

        def refreshed():
            response = client.get(f"/api/customers/{cid}")
            return response.headers["x-cache"] == "HIT" and _name(response) == "Ada Lovelace"

        assert _wait_for(refreshed)


def test_api_writes_are_read_back_at_once(api, clean_db):
    cid = _customer(clean_db, "Ada")
    with api.client() as client:
        for route in ("/api/customers", "/api/analytics/summary", f"/api/customers/{cid}"):
            assert client.get(route).status_code == 200
            assert client.get(route).headers["x-cache"] == "HIT"

        assert client.patch(f"/api/customers/{cid}", json={"name": "Ada L"}).status_code == 200
        profile = client.get(f"/api/customers/{cid}")
        assert (profile.headers["x-cache"], _name(profile)) == ("MISS", "Ada L")
        index = client.get("/api/customers")
        assert index.headers["x-cache"] == "MISS"
        assert "Ada L" in index.text
        assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "HIT"

        order = {"external_id": "o-1", "customer_id": cid, "amount": "12.50"}
        assert client.post("/api/orders", json=order).status_code == 201
        profile = client.get(f"/api/customers/{cid}")
        assert profile.headers["x-cache"] == "MISS"
        assert [o["external_id"] for o in profile.json()["orders"]] == ["o-1"]
        summary = client.get("/api/analytics/summary")
        assert summary.headers["x-cache"] == "MISS"

        # A remembered 404 gives way to the customer this process just created.
        next_id = cid + 1
        assert client.get(f"/api/customers/{next_id}").status_code == 404
        created = client.post("/api/customers", json={"name": "Bo"}).json()
        assert created["id"] == next_id
        fresh = client.get(f"/api/customers/{next_id}")
        assert (fresh.status_code, fresh.headers["x-cache"]) == (200, "MISS")

        # Also while the listener is down (hits then ask the database).
        api.app.state.changes.stop()
        assert client.patch(f"/api/customers/{cid}", json={"name": "Ada 3"}).status_code == 200
        profile = client.get(f"/api/customers/{cid}")
        assert (profile.headers["x-cache"], _name(profile)) == ("MISS", "Ada 3")


def test_losing_the_listener_falls_back_to_the_database_and_recovers(api, clean_db):
    listener = api.app.state.changes
    listener.retry_seconds = 2.0  # a window to read in while it is disconnected
    a = _customer(clean_db, "Ada")
    b = _customer(clean_db, "Bo")
    with api.client() as client:
        for cid in (a, b):
            assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "MISS"
            assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "HIT"

        with clean_db.begin() as conn:
            assert conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :a AND datname = current_database()"
                ),
                {"a": APPLICATION_NAME},
            ).scalar_one()
        assert _wait_for(lambda: not listener.covering)

        # Nobody will notify us of this write: the hit must ask the database.
        _rename(clean_db, a, "Ada 2")
        with counting_sql(api.app) as sent:
            stale = client.get(f"/api/customers/{a}")
        assert stale.headers["x-cache"] == "STALE"
        assert _name(stale) == "Ada"
        assert any("WITH ORDINALITY" in s for s in sent)  # the change-log check

        # Written while disconnected, read only after the reconnection: the catch-up covers it.
        _rename(clean_db, b, "Bo 2")
        assert _wait_for(lambda: listener.covering and listener.connections == 2)
        after = client.get(f"/api/customers/{b}")
        assert after.headers["x-cache"] != "HIT" or _name(after) == "Bo 2"

        for cid, name in ((a, "Ada 2"), (b, "Bo 2")):
            assert _wait_for(
                lambda cid=cid, name=name: (
                    (r := client.get(f"/api/customers/{cid}")).headers["x-cache"] == "HIT"
                    and _name(r) == name
                )
            )
        with counting_sql(api.app) as sent:
            for _ in range(20):
                for cid in (a, b):
                    assert client.get(f"/api/customers/{cid}").headers["x-cache"] == "HIT"
        assert sent == []


def test_changes_committed_while_disconnected_come_from_the_catch_up(api, clean_db):
    """A transaction open across the reconnection holds the new floor down, so a change
    committed while disconnected can lie above the floor: only the catch-up rows know it."""
    listener = api.app.state.changes
    listener.retry_seconds = 0.2
    b = _customer(clean_db, "Bo")
    other = _customer(clean_db, "Zed")
    with api.client() as client, clean_db.connect() as open_tx:
        open_tx.execute(text("UPDATE customers SET name = 'Zed 2' WHERE id = :i"), {"i": other})
        held = int(open_tx.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())
        assert client.get(f"/api/customers/{b}").headers["x-cache"] == "MISS"  # floor-high file
        assert client.get(f"/api/customers/{b}").headers["x-cache"] == "HIT"

        with clean_db.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :a AND datname = current_database()"
                ),
                {"a": APPLICATION_NAME},
            )
        assert _wait_for(lambda: not listener.covering)
        _rename(clean_db, b, "Bo 2")  # not notified to anyone listening later
        assert _wait_for(lambda: listener.covering and listener.connections == 2)
        assert api.app.state.cache.recent.floor <= held  # the open transaction holds it down

        with counting_sql(api.app) as sent:
            after = client.get(f"/api/customers/{b}")
        assert (after.headers["x-cache"], _name(after)) == ("STALE", "Bo")
        # Memory answered (the file is above the floor), not the change-log check (the
        # background refresh the STALE started may have sent its own statements).
        assert not any("WITH ORDINALITY" in s for s in sent)
        open_tx.rollback()


def test_out_of_order_commits_never_give_a_wrong_hit(api, clean_db):
    """T1 starts first (lower txid) and commits after T2. A file built in between reflects T2
    but not T1; when T1 commits, the file must count as stale, not current."""
    a = _customer(clean_db, "Ada")
    other = _customer(clean_db, "Zed")
    with api.client() as client:
        assert client.get(f"/api/customers/{a}").headers["x-cache"] == "MISS"
        with clean_db.connect() as t1:
            t1.execute(text("UPDATE customers SET name = 'late' WHERE id = :i"), {"i": a})
            t1_txid = int(t1.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())
            with clean_db.begin() as t2:  # later txid, committed first
                t2.execute(
                    text(
                        "INSERT INTO orders (external_id, customer_id, amount)"
                        " VALUES ('o-2', :i, 5)"
                    ),
                    {"i": a},
                )

            def has_order():
                # Served (STALE while T1 holds the watermark back) and rebuilt in the background.
                return bool(client.get(f"/api/customers/{a}").json()["orders"])

            assert _wait_for(has_order)  # rebuilt while T1 is still open
            document = read_json(api.cache_dir / "customers" / f"{a}.json")
            assert document["customer"]["name"] == "Ada"
            assert int(document["watermark"]) <= t1_txid
            t1.commit()
        # Notifications arrive in commit order: once this later one is processed, T1's is too.
        _rename(clean_db, other, "Zed 2")
        wait_for_changes(api, clean_db)
        response = client.get(f"/api/customers/{a}")
        assert response.headers["x-cache"] != "HIT" or _name(response) == "late"
        assert _wait_for(lambda: _name(client.get(f"/api/customers/{a}")) == "late")


def test_memory_stays_bounded_by_raising_its_floor():
    recent = RecentChanges(max_customer_entries=3)
    recent.cover(100, [Change(100, "orders", 1)])
    for cid, txid in ((2, 101), (3, 102), (4, 103)):
        recent.record(Change(txid, "orders", cid))
    assert recent.size() <= 1 + 3  # the table entry and three customers
    # Customer 1's change (txid 100) was forgotten: a file of customer 1 with watermark 100
    # is stale, and memory must not say otherwise; it sends the question to the database.
    assert recent.floor == 101
    check = recent.check(100, ("orders",), customer_id=1)
    assert not check.covered
    assert recent.check(104, ("orders",), customer_id=1).covered  # newer: memory still answers
    assert recent.check(103, ("orders",), customer_id=4).stale


def test_memory_follows_the_change_log_rules():
    recent = RecentChanges()
    recent.cover(10, [])
    recent.record(Change(12, "orders", 7))
    recent.record(Change(13, "leads", None))
    recent.record(Change(14, "campaigns", None))
    entities, shared = ("customers", "orders", "leads", "campaigns"), ("campaigns",)
    assert recent.check(13, entities, 7).stale is False  # a lead naming nobody: not customer 7's
    assert recent.check(12, entities, 7).stale is True  # its order
    assert recent.check(13, entities, 8).stale is False  # another customer's order
    assert recent.check(14, entities, 8, shared).stale is True  # campaigns: every customer's
    assert recent.check(13, ("leads",)).stale is True  # a file of every customer
    recent.record(Change(15, "orders", None, all_customers=True))  # TRUNCATE
    assert recent.check(15, ("orders",), 8).stale is True
    assert not recent.check(9, entities, 8).covered  # below the floor
    recent.uncover()
    assert not recent.check(15, entities, 8).covered
    own = recent.record_own([Change(16, "customers", 8)])
    verdict = recent.check(16, entities, 8, own_reflected=own - 1)
    assert verdict.own and verdict.stale  # known without coverage: it is our own write
    assert not recent.check(16, entities, 8, own_reflected=own).own  # rebuilt since


def test_the_server_runs_httptools_on_uvloop(api):
    server = build_server(api.app, "127.0.0.1", 0, log_level="warning", lifespan="off")
    assert issubclass(server.config.http, HttpToolsProtocol)  # with the header timeout mixed in
    assert server.config.loop == "uvloop"  # chosen, not left to "auto"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: server.started)
        assert isinstance(server.servers[0], uvloop.loop.Server)
    finally:
        server.should_exit = True
        thread.join(10)
