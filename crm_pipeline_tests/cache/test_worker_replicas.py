"""Two workers with the same name: one works, the other stands by and takes over."""

from contextlib import ExitStack

from sqlalchemy import text

from crm_pipeline_tests.cache.worker_helpers import read_file, running_worker, wait_for


def _rename(engine, cid, name):
    with engine.begin() as conn:
        conn.execute(text("UPDATE customers SET name = :n WHERE id = :c"), {"n": name, "c": cid})


def test_only_one_worker_per_name_processes(clean_db, database_url, dirs):
    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (email) VALUES ('two@x.io') RETURNING id")
        ).scalar_one()
    path = dirs["cache"] / "customers" / f"{cid}.json"
    with ExitStack() as first_stack:
        first = first_stack.enter_context(running_worker(clean_db, database_url, dirs["cache"]))
        wait_for(lambda: first.active.is_set())
        with running_worker(clean_db, database_url, dirs["cache"]) as second:
            for n in range(5):
                _rename(clean_db, cid, f"name {n}")
                wait_for(lambda n=n: (read_file(path) or {})["customer"]["name"] == f"name {n}")
            wait_for(lambda: first.batches >= 5)
            assert not second.active.is_set() and second.batches == 0

            first_stack.close()  # the active one stops: its lock goes with its connection
            wait_for(lambda: second.active.is_set(), timeout=5)
            _rename(clean_db, cid, "after takeover")
            wait_for(lambda: read_file(path)["customer"]["name"] == "after takeover")
            assert second.batches > 0
