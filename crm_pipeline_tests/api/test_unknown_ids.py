"""A 404 for an id that does not exist is remembered until that id changes, so asking for unknown
ids costs no build (memory of recent changes, or the batched change-log check); the maps behind
it stay bounded."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from crm_pipeline_tests.api.conftest import wait_for_changes


def _count_builds(store) -> list[str]:
    """Record every `store.build` (by key name) from now on."""
    built: list[str] = []
    build = store.build

    def counting(key):
        built.append(key.name)
        return build(key)

    store.build = counting
    return built


def _insert_customer(engine, cid: int | None, name: str) -> int:
    # As psql or another app would: a plain INSERT, seen only through the change log.
    with engine.begin() as conn:
        if cid is None:
            return conn.execute(
                text("INSERT INTO customers (name) VALUES (:n) RETURNING id"), {"n": name}
            ).scalar_one()
        conn.execute(
            text("INSERT INTO customers (id, name) VALUES (:i, :n)"), {"i": cid, "n": name}
        )
        return cid


def test_an_unknown_id_is_remembered_until_the_customer_is_created(api, clean_db):
    store = api.app.state.cache
    built = _count_builds(store)
    unknown = 424242
    with api.client() as client:
        first = client.get(f"/api/customers/{unknown}")
        assert first.status_code == 404
        assert first.headers["content-type"] == "application/problem+json"
        assert built == [f"customer:{unknown}"]
        for _ in range(5):
            assert client.get(f"/api/customers/{unknown}").status_code == 404
        assert len(built) == 1  # answered from the remembered miss

        # Another customer's change does not touch this id ...
        other = _insert_customer(clean_db, None, "Other")
        assert client.get(f"/api/customers/{unknown}").status_code == 404
        assert len(built) == 1
        assert client.get(f"/api/customers/{other}").status_code == 200
        assert len(built) == 2

        # ... its creation does: the next request builds and finds it.
        _insert_customer(clean_db, unknown, "Late")
        wait_for_changes(api, clean_db)  # another client's write: seen once notified
        created = client.get(f"/api/customers/{unknown}")
        assert created.status_code == 200
        assert created.headers["x-cache"] == "MISS"
        assert created.json()["customer"]["name"] == "Late"
        assert built[-1] == f"customer:{unknown}" and len(built) == 3
        assert client.get(f"/api/customers/{unknown}").headers["x-cache"] == "HIT"

        # Deleted again: found absent by a build, then remembered.
        with clean_db.begin() as conn:
            conn.execute(text("DELETE FROM customers WHERE id = :i"), {"i": unknown})
        wait_for_changes(api, clean_db)
        assert client.get(f"/api/customers/{unknown}").headers["x-cache"] == "STALE"

        def gone():
            return client.get(f"/api/customers/{unknown}").status_code == 404

        deadline = time.monotonic() + 10
        while not gone():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        builds = len(built)
        assert gone() and gone()
        assert len(built) == builds


def test_remembered_misses_and_build_locks_stay_bounded(api, clean_db):
    store = api.app.state.cache
    store.memory.max_absent = 5
    built = _count_builds(store)
    sizes: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            sizes.append((len(store.memory.absent_names()), len(store.build_locks)))
            stop.wait(0.001)

    def ask(ids) -> None:
        with api.client() as client:
            for cid in ids:
                assert client.get(f"/api/customers/{cid}").status_code == 404

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ids = list(range(1000, 1040))
        threads = [threading.Thread(target=ask, args=(ids[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        watcher.join(5)
    assert len(built) == 40
    assert max(absent for absent, _ in sizes) <= 5
    # A lock exists only while a build runs or waits: at most one per client here.
    assert max(locks for _, locks in sizes) <= 4
    assert len(store.build_locks) == 0
    assert len(store.memory.absent_names()) == 5

    # Least recently used goes first: the last five are remembered, the others build again.
    recent = [int(name.split(":")[1]) for name in store.memory.absent_names()]
    with api.client() as client:
        for cid in recent:
            assert client.get(f"/api/customers/{cid}").status_code == 404
        assert len(built) == 40
        forgotten = next(cid for cid in ids if cid not in recent)
        assert client.get(f"/api/customers/{forgotten}").status_code == 404
        assert built[-1] == f"customer:{forgotten}" and len(built) == 41
    assert len(store.memory.absent_names()) == 5
