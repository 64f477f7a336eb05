"""Running a cache worker against the test database, and comparing cache files with the DB."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, text

from crm_pipeline.cache.customer_index import read_customers, segments_in_use
from crm_pipeline.cache.registry import CUSTOMER_INDEX, CUSTOMER_PROFILES
from crm_pipeline.cache.stores import LocalFolder
from crm_pipeline.cache.worker.loop import CacheWorker, WorkerConfig
from crm_pipeline.cachefile import dumps
from crm_pipeline.db.engine import libpq_url, read_snapshot
from crm_pipeline.db.worker_state import read_worker_state

ENVELOPE = {"generated_at", "watermark", "schema_version"}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    """Poll `predicate` until it is truthy (its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {predicate.__name__}")
        time.sleep(every)


def write_customers(
    engine: Engine,
    stop: threading.Event,
    counter: list[int],
    *,
    slot: int = 0,
    seed: int = 3,
    new_customer_every: int = 0,
    order_every: int = 5,
    hold: float = 0.0,
    pause: float = 0.005,
    barrier: threading.Barrier | None = None,
) -> None:
    """A writer thread's loop until `stop`: each transaction renames a random customer, and every
    `order_every`-th also adds an order (every `new_customer_every`-th a new customer, 0 never).

    `counter[slot]` counts committed transactions. `hold` keeps each transaction open a random
    0..hold seconds after its writes, so concurrent writers commit out of order.
    """
    rng = random.Random(seed)
    if barrier is not None:
        barrier.wait()
    n = 0
    while not stop.is_set():
        n += 1
        with engine.begin() as conn:
            ids = conn.execute(text("SELECT id FROM customers")).scalars().all()
            cid = rng.choice(ids)
            conn.execute(
                text("UPDATE customers SET name = :n WHERE id = :c"), {"n": f"{seed}-{n}", "c": cid}
            )
            if new_customer_every and n % new_customer_every == 0:
                conn.execute(
                    text("INSERT INTO customers (email) VALUES (:e)"), {"e": f"p{seed}-{n}@x.io"}
                )
            if n % order_every == 0:
                conn.execute(
                    text("INSERT INTO orders (customer_id, amount) VALUES (:c, :a)"),
                    {"c": cid, "a": n},
                )
            if hold:
                time.sleep(rng.uniform(0, hold))
        counter[slot] = n
        time.sleep(pause)


@contextmanager
def running_worker(
    engine: Engine, database_url: str, cache_dir: Path, **config: Any
) -> Iterator[CacheWorker]:
    """A cache worker in a thread (stopped, and checked to stop, on exit)."""
    reporter = config.pop("reporter", None)
    settings = {"name": "test-worker", "poll_seconds": 0.5, "coalesce_seconds": 0.2, **config}
    worker = CacheWorker(
        engine, libpq_url(database_url), WorkerConfig(cache_dir=cache_dir, **settings), reporter
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the worker did not stop"


def normalised(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` as it reads back from a cache file, without the envelope."""
    return {k: v for k, v in orjson.loads(dumps(payload)).items() if k not in ENVELOPE}


def read_file(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def customer_mismatches(engine: Engine, cache_dir: Path) -> list[int]:
    """Customers whose file differs from the DB (missing, stale, or there but deleted)."""
    with read_snapshot(engine) as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all()
        profiles = CUSTOMER_PROFILES.build_customers(conn, ids)
    folder = cache_dir / CUSTOMER_PROFILES.path
    wrong = []
    for cid in ids:
        doc = read_file(folder / f"{cid}.json")
        if doc is None or normalised(doc) != normalised(profiles[cid]):
            wrong.append(cid)
    on_disk = {int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()}
    return sorted(set(wrong) | (on_disk - set(ids)))


def expected_index(engine: Engine) -> list[dict[str, Any]]:
    """Every line of the customer index as a full rebuild would write it now."""
    with read_snapshot(engine) as conn:
        built = CUSTOMER_INDEX.build_segments(conn, segments_in_use(conn))
    customers = [c for segment in sorted(built) for c in built[segment]["customers"]]
    return orjson.loads(dumps({"customers": customers}))["customers"]


def index_matches(engine: Engine, cache_dir: Path) -> bool:
    """Do the customer index segments (as the manifest lists them) hold what the DB has now?"""
    return read_customers(LocalFolder(cache_dir)) == expected_index(engine)


def index_count(cache_dir: Path) -> int | None:
    """The customer count the index manifest gives (None: no manifest)."""
    manifest = read_file(cache_dir / CUSTOMER_INDEX.file())
    return None if manifest is None else manifest["count"]


def stored_watermark(engine: Engine, name: str = "test-worker") -> str | None:
    with engine.connect() as conn:
        state = read_worker_state(conn, name)
    return state.watermark if state else None


def worker_env(database_url: str, dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    """The environment of a `crm-pipeline cache-worker` process named `test-worker` on the test
    database (this process's own CRM_/FB_/DAGSTER_ settings left out)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    return {
        **base,
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(dirs["cache"]),
        "CRM_DATA_DIR": str(dirs["data"]),
        "CRM_CACHE_WORKER_NAME": "test-worker",
        "CRM_CACHE_WORKER_POLL_SECONDS": "0.5",
        **extra,
    }


def seed_customers(engine: Engine, count: int) -> None:
    """`count` customers with distinct emails."""
    with engine.begin() as conn:
        for i in range(count):
            conn.execute(text("INSERT INTO customers (email) VALUES (:e)"), {"e": f"s{i}@x.io"})
