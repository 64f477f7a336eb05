"""The customer list's in-memory index against a real PostgreSQL and cache worker: paging stays
exact while other clients write between pages, and a rewritten segment is picked up without a
restart, reading that segment only."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from crm_pipeline.api.app import create_app
from crm_pipeline.cache.customer_index import MANIFEST_FILE, segment_file
from crm_pipeline.cache.rebuild import rebuild_index
from crm_pipeline.cache.stores import Fetched, LocalFolder, Signature
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline_tests.api.conftest import api_settings, issue_key, run_live
from crm_pipeline_tests.api.customer_list_helpers import W, add_customers, walk
from crm_pipeline_tests.cache.worker_helpers import expected_index, running_worker, wait_for

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
NAMES = ["Ana", "Bruno", "Carla", "Diego", "Elena", "Fabio", "Gina", "Hugo", "Iris", "Joao"]
STARTS = (1, W + 1, 2 * W + 1)  # three segments


def _seed(engine) -> list[int]:
    rows = [
        {
            "id": STARTS[k % 3] + k,
            "name": f"{NAMES[k % 10]} {k:03d}",
            "email": f"c{k}@x.io",
            "tier": "standard",
            "updated_at": T0 + dt.timedelta(minutes=k * 7 % 45),
        }
        for k in range(45)
    ]
    add_customers(engine, rows)
    with engine.begin() as conn:
        for k, row in enumerate(rows):
            conn.execute(  # revenue with ties, for the tie-break by id
                text("INSERT INTO orders (customer_id, amount, status) VALUES (:i, :a, 'paid')"),
                {"i": row["id"], "a": k * 13 % 20 + 1},
            )
    return [row["id"] for row in rows]


def _memory_matches_db(memory, engine) -> bool:
    held = {c.id: c.as_json() for c in memory.search.customers.values()}
    return held == {c["id"]: c for c in expected_index(engine)}


def _move_before_cursor(conn, sort: str, cid: int, n: int) -> None:
    """Change `cid`'s sort key so that it sorts before every customer seen so far."""
    if sort == "name":
        conn.execute(
            text("UPDATE customers SET name = :n WHERE id = :i"), {"n": f"Aaa {n}", "i": cid}
        )
    elif sort == "revenue":
        conn.execute(
            text("INSERT INTO orders (customer_id, amount, status) VALUES (:i, 10000, 'paid')"),
            {"i": cid},
        )
    else:
        conn.execute(
            text("UPDATE customers SET updated_at = :u WHERE id = :i"),
            {"u": T0 + dt.timedelta(days=1), "i": cid},
        )


def _keep_key(conn, sort: str, cid: int, n: int) -> None:
    """Change `cid` in a way its `sort` key does not see."""
    column = "email" if sort == "name" else "name"
    conn.execute(
        text(f"UPDATE customers SET {column} = :v WHERE id = :i"), {"v": f"k{n}@x.io", "i": cid}
    )


@contextlib.contextmanager
def _served(engine, database_url: str, dirs, store: LocalFolder | None = None):
    """The customers of `_seed` and their index built (as a run or the worker would, before
    the API), then the API on that cache, read through `store` (default: the folder itself):
    yields (client, app, ids)."""
    ids = _seed(engine)
    with read_snapshot(engine) as conn:
        rebuild_index(conn, dirs["cache"], None)
    app = create_app(
        api_settings(dirs["cache"]), database_url=database_url, cache_dir=store or dirs["cache"]
    )
    live = run_live(app)
    headers = {"Authorization": f"Bearer {issue_key(database_url)}"}
    try:
        with httpx.Client(base_url=next(live), headers=headers, trust_env=False) as client:
            yield client, app, ids
    finally:
        next(live, None)


@pytest.mark.parametrize("sort", ["name", "revenue", "updated"])
def test_paging_walks_every_customer_once_while_other_clients_write(
    api, clean_db, database_url, dirs, sort
):
    before = set(_seed(clean_db))
    memory = api.app.state.customers
    seen: list[int] = []
    moved, deleted, kept = set(), set(), set()

    def write_between(number: int, page: list[dict]) -> None:
        seen.extend(c["id"] for c in page)
        if number >= 5:
            return
        unseen = sorted(before - set(seen) - moved - deleted - kept)
        with clean_db.begin() as conn:
            conn.execute(  # a new customer, in a segment of its own
                text("INSERT INTO customers (id, name, email, updated_at) VALUES (:i, :n, :e, :u)"),
                {"i": 3 * W + number, "n": f"New {number}", "e": f"n{number}@x.io", "u": T0},
            )
            _keep_key(conn, sort, unseen[0], number)
            kept.add(unseen[0])
            _move_before_cursor(conn, sort, unseen[1], number)
            moved.add(unseen[1])
            gone = unseen[2] if number % 2 else seen[0]
            conn.execute(text("DELETE FROM orders WHERE customer_id = :i"), {"i": gone})
            conn.execute(text("DELETE FROM customers WHERE id = :i"), {"i": gone})
            deleted.add(gone)
        # The next page is asked for once this process's index holds every write.
        wait_for(lambda: _memory_matches_db(memory, clean_db))

    with running_worker(clean_db, database_url, dirs["cache"]) as worker, api.client() as client:
        wait_for(lambda: worker.active.is_set())
        walked = [c["id"] for c in walk(client, between=write_between, sort=sort, limit=6)]
    assert len(moved) == len(kept) == 5
    assert len(walked) == len(set(walked)), "a customer was served twice"
    assert before - deleted - moved <= set(walked), "a customer was skipped"
    assert not moved & set(walked)  # moved behind the cursor before its page: not served
    assert kept <= set(walked)


class CountingReads(LocalFolder):
    """A local cache folder that records every file read from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetched: list[str] = []

    def fetch(self, relative: str, known: Signature | None = None) -> Fetched | None:
        self.fetched.append(relative)
        return super().fetch(relative, known)

    def segments_read(self) -> list[str]:
        return sorted(f for f in self.fetched if f != MANIFEST_FILE)


def test_a_rewritten_segment_is_picked_up_without_a_restart_reading_only_that_segment(
    clean_db, database_url, dirs
):
    store = CountingReads(dirs["cache"])
    with _served(clean_db, database_url, dirs, store) as (client, _, ids):
        assert len(walk(client, limit=500)) == len(ids)
        assert store.segments_read() == [segment_file(s) for s in (0, 1, 2)]  # each once
        store.fetched.clear()
        for _ in range(30):  # pages are answered from memory, never by reading segments
            page = client.get("/api/customers", params={"q": "ana", "sort": "revenue"})
            assert page.status_code == 200 and page.headers["x-cache"] == "HIT"
        assert store.segments_read() == []

        target = next(i for i in ids if W <= i < 2 * W)
        with clean_db.begin() as conn:
            conn.execute(
                text("UPDATE customers SET name = 'Renamed Person' WHERE id = :i"),
                {"i": target},
            )
        with read_snapshot(clean_db) as conn:  # another writer rewrites its segment
            rebuild_index(conn, dirs["cache"], [target])

        def renamed():
            found = client.get("/api/customers", params={"q": "renamed"}).json()
            return [c["id"] for c in found["customers"]] == [target]

        wait_for(renamed)
        assert store.segments_read() == [segment_file(1)]


class HeldReads(LocalFolder):
    """A local cache folder whose segment reads wait until `release` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def fetch(self, relative: str, known: Signature | None = None) -> Fetched | None:
        if relative != MANIFEST_FILE:
            assert self.release.wait(30), "the test never released the segment reads"
        return super().fetch(relative, known)


def test_the_process_is_unready_until_its_customer_index_is_loaded_and_lists_wait_for_it(
    clean_db, database_url, dirs
):
    store = HeldReads(dirs["cache"])
    try:
        with _served(clean_db, database_url, dirs, store) as (client, _, ids):
            loading = client.get("/health/ready")
            assert loading.status_code == 503, loading.text
            assert loading.json() == {"status": "loading"}
            assert loading.headers["retry-after"] == "1"
            assert client.get("/health").status_code == 200  # alive all the same
            with ThreadPoolExecutor(1) as pool:  # a list request meanwhile waits, then answers
                listed = pool.submit(client.get, "/api/customers", params={"limit": 500})
                time.sleep(0.3)
                assert not listed.done()
                store.release.set()
                page = listed.result(timeout=30)
            assert page.status_code == 200
            assert sorted(c["id"] for c in page.json()["customers"]) == sorted(ids)
            assert client.get("/health/ready").json() == {"status": "ready", "customers": 45}
    finally:
        store.release.set()  # else the server's shutdown waits for the held reads


def test_a_search_runs_beside_the_event_loop_which_keeps_answering_meanwhile(
    clean_db, database_url, dirs
):
    with _served(clean_db, database_url, dirs) as (client, app, _):
        assert client.get("/api/customers", params={"q": "ana"}).status_code == 200
        index = app.state.customers.search
        with ThreadPoolExecutor(1) as pool:
            with index.lock:  # the search below cannot finish while this is held
                searching = pool.submit(client.get, "/api/customers", params={"q": "ana"})
                time.sleep(0.3)
                assert not searching.done()
                # Another request is answered meanwhile: the loop is not stuck in the search.
                assert client.get("/health", timeout=5).status_code == 200
            found = searching.result(timeout=30)
        assert found.status_code == 200 and found.json()["customers"]
