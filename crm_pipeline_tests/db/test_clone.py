"""`clone-db`: a consistent, verified, atomic copy of the database to PostgreSQL or Parquet."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from crm_pipeline import atomic
from crm_pipeline.db import schema
from crm_pipeline.db.clone import CloneError, clone_database, mask_value, to_parquet, to_postgres
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.defs.crm.snapshot import local_db_snapshot
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline_tests.db.clone_seed import populate

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
# Every table but the API keys: credentials of this deployment, never copied.
TABLES = [
    t.name
    for t in schema.metadata.sorted_tables
    if t.name not in ("api_keys", "cache_worker_state")
]


@pytest.fixture
def populated(clean_db, database_url):
    populate(clean_db)
    return database_url


def _figures(url: str) -> dict[str, tuple[int, int]]:
    """Independently computed per-table row count and order-independent checksum."""
    out = {}
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for name in TABLES:
            out[name] = conn.execute(
                f"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {name} t"
            ).fetchone()
    return out


def _scalar(url: str, query: str):
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(query).fetchone()[0]


def test_clone_to_postgres_is_complete_verified_and_usable(populated, fresh_database_url):
    source = _figures(populated)
    assert source["change_log"][0] > 0  # the triggers logged the seeding
    err = io.StringIO()

    result = clone_database(populated, fresh_database_url, progress=err)

    assert result.ok and result.kind == "postgres"
    assert _figures(fresh_database_url) == source
    assert {t.table: t.rows for t in result.tables} == {k: v[0] for k, v in source.items()}
    for name in TABLES:
        assert f"clone {name}" in err.getvalue()
    # The schema came from our migrations; target triggers did not fire during the load ...
    assert _scalar(fresh_database_url, "SELECT version_num FROM alembic_version")
    # ... but work afterwards, and identity sequences were moved past the copied ids.
    max_id = _scalar(fresh_database_url, "SELECT max(id) FROM customers")
    with psycopg.connect(libpq_url(fresh_database_url)) as conn:
        new_id = conn.execute(
            "INSERT INTO customers (name, email) VALUES ('New', 'new@x.io') RETURNING id"
        ).fetchone()[0]
        conn.execute("INSERT INTO webhook_inbox (source, event_key, payload) VALUES ('x','y','{}')")
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
    assert new_id > max_id
    assert _scalar(fresh_database_url, "SELECT count(*) FROM change_log") == (
        source["change_log"][0] + 1
    )


def test_clone_to_parquet_matches_source(populated, tmp_path):
    target = tmp_path / "snap"
    source = _figures(populated)

    result = clone_database(populated, target, progress=None)

    assert result.ok and result.kind == "parquet"
    assert {t.table: (t.target_count, t.target_checksum) for t in result.tables} == source
    files = sorted(p.name for p in target.iterdir())
    assert files == sorted([f"{n}.parquet" for n in TABLES] + ["manifest.json"])
    for name in TABLES:
        assert pq.read_metadata(target / f"{name}.parquet").num_rows == source[name][0]
    # Values survive with their types: money as decimals, awkward text intact.
    orders = pq.read_table(target / "orders.parquet").to_pydict()
    total = _scalar(populated, "SELECT sum(amount) FROM orders")
    assert sum(orders["amount"]) == total
    texts = set(pq.read_table(target / "messages.parquet", columns=["text"])["text"].to_pylist())
    assert "tab\there, newline\nthere, backslash \\ and ünïcode ✓" in texts and "" in texts
    manifest = json.loads((target / "manifest.json").read_text())
    assert [t["table"] for t in manifest["tables"]] == TABLES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".snap")]  # no temp left


def _writers(url: str, stop: threading.Event, commits: list[int]) -> list[threading.Thread]:
    """Writers that keep invariants true in every committed state.

    Each transaction either moves money between two orders, or inserts a new customer with a
    +x and a -x order: SUM(amount) never changes, and no order points at a missing customer.
    """

    def work(seed: int) -> None:
        rng = random.Random(seed)
        eng = create_engine(url, poolclass=NullPool)
        n = 0
        with eng.connect() as conn:
            ids = [r[0] for r in conn.execute(text("SELECT id FROM orders")).all()]
            conn.rollback()
            while not stop.is_set():
                with conn.begin():
                    if rng.random() < 0.5:
                        a, b = rng.sample(ids, 2)
                        x = Decimal(rng.randrange(1, 500)) / 100
                        upd = "UPDATE orders SET amount = amount + :x WHERE id = :id"
                        conn.execute(text(upd), {"x": -x, "id": a})
                        conn.execute(text(upd), {"x": x, "id": b})
                    else:
                        cid = conn.execute(
                            text("INSERT INTO customers (name) VALUES ('w') RETURNING id")
                        ).scalar()
                        y = Decimal(rng.randrange(1, 500)) / 100
                        for sign in (1, -1):
                            conn.execute(
                                text(
                                    "INSERT INTO orders (external_id, customer_id, amount) "
                                    "VALUES (:e, :c, :a)"
                                ),
                                {"e": f"W{seed}-{n}-{sign}", "c": cid, "a": sign * y},
                            )
                n += 1
                commits[seed] = n
        eng.dispose()

    return [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(commits))]


def _invariants(url: str) -> tuple[Decimal, int, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(
            "SELECT sum(amount), count(*) % 2,"
            " (SELECT count(*) FROM orders o WHERE NOT EXISTS"
            "   (SELECT 1 FROM customers c WHERE c.id = o.customer_id))"
            " FROM orders"
        ).fetchone()


@pytest.mark.parametrize("kind", ["postgres", "parquet"])
def test_clone_is_one_snapshot_while_writers_run(populated, fresh_database_url, tmp_path, kind):
    total = _scalar(populated, "SELECT sum(amount) FROM orders")
    parity = _scalar(populated, "SELECT count(*) % 2 FROM orders")
    stop, commits = threading.Event(), [0, 0, 0]
    threads = _writers(populated, stop, commits)
    for t in threads:
        t.start()
    seen: list[int] = []

    def slow(report) -> None:  # let writers commit between every two tables
        seen.append(sum(commits))
        time.sleep(0.15)

    try:
        while sum(commits) < 20:
            time.sleep(0.01)
        target = fresh_database_url if kind == "postgres" else tmp_path / "snap"
        result = clone_database(populated, target, progress=None, on_table_done=slow)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert seen[-1] - seen[0] > 20, "writers did not run during the clone"
    assert result.ok
    if kind == "postgres":
        assert _invariants(fresh_database_url) == (total, parity, 0)
    else:
        orders = pq.read_table(tmp_path / "snap" / "orders.parquet").to_pydict()
        customers = set(pq.read_table(tmp_path / "snap" / "customers.parquet")["id"].to_pylist())
        assert sum(orders["amount"]) == total
        assert len(orders["id"]) % 2 == parity
        assert set(orders["customer_id"]) <= customers
    # ... and the source really moved on meanwhile.
    assert _scalar(populated, "SELECT count(*) FROM orders") > sum(
        r.rows for r in result.tables if r.table == "orders"
    )


def test_failure_midway_leaves_postgres_target_untouched(populated, fresh_database_url):
    def boom(report) -> None:
        if report.table == "orders":
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        clone_database(populated, fresh_database_url, progress=None, on_table_done=boom)
    assert _user_tables(fresh_database_url) == []


def test_non_empty_targets_are_refused_and_kept(populated, fresh_database_url, tmp_path):
    with psycopg.connect(libpq_url(fresh_database_url)) as conn:
        conn.execute("CREATE TABLE keep_me (x int)")
        conn.execute("INSERT INTO keep_me VALUES (1)")
    with pytest.raises(CloneError, match="not empty"):
        clone_database(populated, fresh_database_url, progress=None)
    assert _user_tables(fresh_database_url) == ["public.keep_me"]
    assert _scalar(fresh_database_url, "SELECT count(*) FROM keep_me") == 1

    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "mine.txt").write_text("precious")
    with pytest.raises(CloneError, match="not an empty folder"):
        clone_database(populated, folder, progress=None)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]

    with pytest.raises(CloneError, match="source database itself"):
        clone_database(populated, populated, progress=None)


def test_a_parquet_clone_that_does_not_verify_is_not_published(populated, tmp_path, monkeypatch):
    real = to_parquet.verify_parquet

    def corrupt(source_url, folder, result):
        real(source_url, folder, result)
        result.tables[3].target_checksum += 1

    monkeypatch.setattr(to_parquet, "verify_parquet", corrupt)
    with pytest.raises(CloneError, match="did not verify"):
        clone_database(populated, tmp_path / "snap", progress=None)
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_clone_is_published_by_the_atomic_helper(clean_db, database_url, tmp_path):
    """The directory is renamed into place by `atomic.replace_dir`, which fsyncs the parent so
    the rename survives a crash; the manifest goes through the same helper."""
    calls: list[tuple[str, Path]] = []
    real_replace, real_write = atomic.replace_dir, atomic.write_bytes_atomic

    def replace_dir(tmp: Path, target: Path) -> None:
        calls.append(("replace_dir", target))
        real_replace(tmp, target)

    def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> int:
        calls.append(("write", path.name))
        return real_write(path, data, mode)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic, "replace_dir", replace_dir)
        mp.setattr(atomic, "write_bytes_atomic", write_bytes_atomic)
        clone_database(database_url, tmp_path / "snap", progress=None)

    assert calls == [("write", "manifest.json"), ("replace_dir", tmp_path / "snap")]
    assert (tmp_path / "snap" / "manifest.json").exists()


def test_mask_pii_hides_originals_and_keeps_joins(populated, fresh_database_url, monkeypatch):
    monkeypatch.setenv("CRM_MASK_KEY", "test-key-1")
    originals = {
        r[0] for r in _rows(populated, "SELECT email FROM customers UNION SELECT email FROM leads")
    }
    join = "SELECT count(*) FROM leads l JOIN customers c ON c.id = l.customer_id"
    same_email = join + " WHERE l.email = c.email"
    source_joins = (_scalar(populated, join), _scalar(populated, same_email))
    assert source_joins[1] > 0

    result = clone_database(populated, fresh_database_url, mask_pii=True, progress=None)

    assert result.ok and result.masked
    dump = "\n".join(
        str(r)
        for r in _rows(
            fresh_database_url,
            "SELECT c.name, c.email, c.phone FROM customers c "
            "UNION ALL SELECT l.full_name || l.email || l.phone, l.field_data::text, ''"
            " FROM leads l",
        )
    )
    leaked = [e for e in originals if e and e in dump]
    assert leaked == []
    assert (_scalar(fresh_database_url, join), _scalar(fresh_database_url, same_email)) == (
        source_joins
    )
    # Stable keyed hashes: the SQL and Python forms agree, emails keep their shape.
    masked = _scalar(
        fresh_database_url, "SELECT email FROM customers WHERE email LIKE '%@%' LIMIT 1"
    )
    assert masked.endswith("@masked.invalid")
    expected = mask_value("email", "user.7@example.com", b"test-key-1")
    assert _scalar(fresh_database_url, f"SELECT count(*) FROM customers WHERE email = '{expected}'")
    fd = _scalar(fresh_database_url, "SELECT field_data FROM leads WHERE id = 'L5'")
    by_name = {e["name"]: e["values"][0] for e in fd}
    assert by_name["email"] == _scalar(fresh_database_url, "SELECT email FROM leads WHERE id='L5'")
    assert by_name["full_name"] == mask_value("name", "Lead 5", b"test-key-1")
    assert by_name["phone_number"] == mask_value("phone", "+19990000005", b"test-key-1")
    # Custom questions can hold anything personal: their answers are masked too.
    assert by_name["favourite_colour"] == mask_value("answer", "blue", b"test-key-1")
    # Non-PII tables are untouched.
    assert _figures(fresh_database_url)["orders"] == _figures(populated)["orders"]


def _user_tables(url: str) -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return to_postgres.user_tables(conn)


def _rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(query).fetchall()


def _cli(args: list[str], url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    env = {**base, "CRM_DATABASE_URL": url, "CRM_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_cli_clone_db(populated, fresh_database_url, tmp_path):
    done = _cli(["clone-db", "--to", str(tmp_path / "out")], populated, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "clone orders" in done.stderr and "rows/s" in done.stdout
    assert (tmp_path / "out" / "customers.parquet").exists()

    done = _cli(["clone-db", "--to", fresh_database_url, "--mask-pii"], populated, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "PII masked" in done.stdout
    assert _scalar(fresh_database_url, "SELECT count(*) FROM orders") == _scalar(
        populated, "SELECT count(*) FROM orders"
    )

    again = _cli(["clone-db", "--to", fresh_database_url], populated, tmp_path)
    assert again.returncode == 1
    assert "not empty" in again.stderr


def test_local_db_snapshot_asset_materialises(populated, tmp_path):
    result = dg.materialize(
        [local_db_snapshot],
        resources={
            "postgres": PostgresResource(database_url=populated),
            "storage": StorageResource(data_dir=str(tmp_path / "data")),
        },
    )
    assert result.success
    meta = result.asset_materializations_for_node("local_db_snapshot")[0].metadata
    path = Path(meta["path"].value)
    assert path.parent == tmp_path / "data" / "snapshots"
    assert meta["tables"].value == len(TABLES)
    source = _figures(populated)
    assert meta["rows"].value == sum(v[0] for v in source.values())
    assert meta["checksums"].value["orders"] == {
        "rows": source["orders"][0],
        "checksum": source["orders"][1],
    }
    assert (path / "orders.parquet").exists()
