"""The customer index in segments, against a real PostgreSQL: a change rewrites only its
customers' segments (and the manifest), the segments always equal a full rebuild, and an older
build never replaces a newer segment."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from crm_pipeline.cache.customer_index import (
    MANIFEST_FILE,
    SEGMENT_WIDTH,
    manifest_entries,
    merge_manifest,
    read_customers,
    segment_file,
    segment_of,
)
from crm_pipeline.cache.rebuild import rebuild_index
from crm_pipeline.cache.stores import LocalFolder, ObjectRef, Outcome
from crm_pipeline.cache.worker.batch import WindowRebuild, read_and_rebuild_customers
from crm_pipeline.cachefile import read_json
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline_tests.cache.worker_helpers import expected_index

W = SEGMENT_WIDTH
# Seven customers in four segments (0, 1, 2, 3).
IDS = [1, 2, 3, W + 1, W + 2, 2 * W + 5, 3 * W]


class CountingFolder(LocalFolder):
    """A local cache folder that records every write and removal that reaches it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: dict[str, int] = {}  # relative path -> bytes
        self.removed: list[str] = []

    def file(self, relative: str) -> ObjectRef:
        return ObjectRef(self, relative)  # every write then goes through the methods below

    def publish_document(self, relative: str, document: dict[str, Any]) -> Outcome:
        outcome = super().publish_document(relative, document)
        if outcome.written:
            self.written[relative] = outcome.size
        return outcome

    def update_document(self, relative, merge) -> Outcome:
        outcome = super().update_document(relative, merge)
        if outcome.written:
            self.written[relative] = outcome.size
        return outcome

    def remove(self, relative: str, watermark: str) -> bool:
        self.removed.append(relative)
        return super().remove(relative, watermark)

    def reset(self) -> None:
        self.written, self.removed = {}, []


def _seed(engine: Engine, ids=IDS) -> None:
    with engine.begin() as conn:
        for i in ids:
            conn.execute(
                text("INSERT INTO customers (id, name, email, tier) VALUES (:i, :n, :e, :t)"),
                {"i": i, "n": f"Customer {i}", "e": f"c{i}@x.io", "t": "standard"},
            )
            conn.execute(
                text("INSERT INTO orders (customer_id, amount, status) VALUES (:i, :a, 'paid')"),
                {"i": i, "a": i % 97 + 1},
            )
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('customers', 'id'), 10 * :w)"), {"w": W}
        )


def _batch(engine: Engine, store, since: str | None, max_targeted: int = 2000) -> WindowRebuild:
    """What the cache worker does with one change window."""
    return read_and_rebuild_customers(engine, store, since, max_targeted)


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every cache file: a rewrite renames a new inode into place."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*.json")
    }


def test_one_customer_update_rewrites_its_segment_the_manifest_and_its_360_file_only(
    clean_db, dirs
):
    _seed(clean_db)
    store = CountingFolder(dirs["cache"])
    since = _batch(clean_db, store, None).window.upto  # builds everything once
    assert {segment_file(s) for s in (0, 1, 2, 3)} <= set(store.written)
    for cid, change in (
        (W + 2, "UPDATE customers SET name = 'Renamed' WHERE id = :c"),
        (2 * W + 5, "INSERT INTO orders (customer_id, amount, status) VALUES (:c, 5, 'paid')"),
    ):
        store.reset()
        before = _stamps(dirs["cache"])
        with clean_db.begin() as conn:
            conn.execute(text(change), {"c": cid})
        batch = _batch(clean_db, store, since)
        since = batch.window.upto
        expected = {segment_file(segment_of(cid)), MANIFEST_FILE, f"customers/{cid}.json"}
        assert set(store.written) == expected and store.removed == []
        after = _stamps(dirs["cache"])
        assert {p for p in after if after[p] != before.get(p)} == expected
        [index] = [r for r in batch.targeted if r.asset == "customer_index_cache"]
        assert (index.mode, index.segments, index.customer_ids) == (
            "targeted",
            (segment_of(cid),),
            (cid,),
        )
        assert (
            index.bytes
            == store.written[segment_file(segment_of(cid))] + store.written[MANIFEST_FILE]
        )
    assert read_customers(store) == expected_index(clean_db)


def _mixed_writes(engine: Engine, rng: random.Random, step: int) -> None:
    """One transaction of writes as any client makes them: customers created (in old and new
    segments), renamed, re-tiered or deleted; orders placed, moved and deleted; leads linked."""
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all()
        kind = step % 6
        if kind == 0 or len(ids) < 3:
            new = rng.choice([None, rng.randrange(4 * W, 6 * W)])
            conn.execute(
                text(
                    "INSERT INTO customers (id, name, email) VALUES"
                    " (coalesce(:i, nextval(pg_get_serial_sequence('customers', 'id'))), :n, :e)"
                    " ON CONFLICT DO NOTHING"
                ),
                {"i": new, "n": f"New {step}", "e": f"n{step}@x.io"},
            )
        elif kind == 1:
            conn.execute(
                text("UPDATE customers SET name = :n, tier = :t WHERE id = :i"),
                {"n": f"Name {step}", "t": rng.choice(["gold", "silver"]), "i": rng.choice(ids)},
            )
        elif kind == 2:
            conn.execute(
                text("INSERT INTO orders (customer_id, amount, status) VALUES (:i, :a, :s)"),
                {
                    "i": rng.choice(ids),
                    "a": rng.randint(1, 900),
                    "s": rng.choice(["paid", "pending"]),
                },
            )
        elif kind == 3:
            conn.execute(
                text(
                    "UPDATE orders SET customer_id = :to"
                    " WHERE id = (SELECT min(id) FROM orders WHERE customer_id = :frm)"
                ),
                {"to": rng.choice(ids), "frm": rng.choice(ids)},
            )
        elif kind == 4:
            conn.execute(
                text(
                    "INSERT INTO leads (id, email, customer_id, created_time)"
                    " VALUES (:l, :e, :c, now())"
                ),
                {"l": f"lead-{step}", "e": f"l{step}@x.io", "c": rng.choice([None, *ids])},
            )
        else:
            gone = rng.choice(ids)
            conn.execute(text("DELETE FROM orders WHERE customer_id = :i"), {"i": gone})
            conn.execute(text("DELETE FROM customers WHERE id = :i"), {"i": gone})


def test_segments_equal_a_full_rebuild_after_mixed_writes(clean_db, dirs, tmp_path):
    _seed(clean_db)
    store = CountingFolder(dirs["cache"])
    since = _batch(clean_db, store, None).window.upto
    rng = random.Random(20)
    for step in range(48):
        _mixed_writes(clean_db, rng, step)
        if step % 3 == 2:  # a window of several transactions, as the worker often reads
            since = _batch(clean_db, store, since).window.upto
    with clean_db.begin() as conn:  # a whole segment emptied: its file goes, its entry stays
        conn.execute(
            text("DELETE FROM orders WHERE customer_id BETWEEN :w AND :e"), {"w": W, "e": 2 * W - 1}
        )
        conn.execute(
            text("DELETE FROM customers WHERE id BETWEEN :w AND :e"), {"w": W, "e": 2 * W - 1}
        )
    store.reset()
    since = _batch(clean_db, store, since).window.upto
    removed = [p for p in store.removed if p.startswith("customers/index/")]
    assert removed == [segment_file(1)] and not (dirs["cache"] / segment_file(1)).exists()

    full = LocalFolder(tmp_path / "full")
    with read_snapshot(clean_db) as conn:
        rebuild_index(conn, full, None)
    assert read_customers(store) == read_customers(full) == expected_index(clean_db)
    ours, theirs = (manifest_entries(s.read_document(MANIFEST_FILE)) for s in (store, full))
    live = {s: e.count for s, e in ours.items() if e.count}
    assert live == {s: e.count for s, e in theirs.items() if e.count}
    assert ours[1].count == 0  # listed as removed
    on_disk = {p.name for p in (dirs["cache"] / "customers" / "index").glob("*.json")}
    assert on_disk == {f"{s}.json" for s in live}
    assert (dirs["cache"] / MANIFEST_FILE).is_file()
    # A reader follows each entry's path from the cache root to the segment's file.
    for entry in store.read_document(MANIFEST_FILE)["segments"]:
        if entry["count"]:
            segment = json.loads((dirs["cache"] / entry["path"]).read_text())
            assert len(segment["customers"]) == entry["count"]


def test_a_one_file_index_of_an_older_version_is_replaced_by_the_manifest(clean_db, dirs):
    _seed(clean_db, [1, 2])
    legacy = dirs["cache"] / MANIFEST_FILE  # customers/index.json: the fixed name
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"watermark": "1", "schema_version": 2, "customers": [], "count": 0}')
    with read_snapshot(clean_db) as conn:
        rebuild_index(conn, dirs["cache"], [1])  # no usable manifest yet: a full rebuild
    manifest = json.loads(legacy.read_text())
    assert manifest["schema_version"] == 3 and "customers" not in manifest
    assert manifest["count"] == 2 and manifest["segments"]
    assert [c["id"] for c in read_customers(LocalFolder(dirs["cache"]))] == [1, 2]


def test_a_truncate_or_too_many_customers_rebuilds_every_segment(clean_db, dirs):
    _seed(clean_db)
    store = CountingFolder(dirs["cache"])
    since = _batch(clean_db, store, None).window.upto
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id IN (1, :a)"), {"a": W + 1})
    store.reset()
    batch = _batch(clean_db, store, since, max_targeted=1)
    [index] = [r for r in batch.targeted if r.asset == "customer_index_cache"]
    assert index.mode == "full" and set(index.segments) == {0, 1, 2, 3}
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE leads, orders"))
    store.reset()
    batch = _batch(clean_db, store, batch.window.upto)
    [index] = [r for r in batch.targeted if r.asset == "customer_index_cache"]
    assert index.mode == "full" and set(index.segments) == {0, 1, 2, 3}
    assert read_customers(store) == expected_index(clean_db)
    assert all(c["orders"] == 0 for c in read_customers(store))


def test_an_older_build_never_replaces_a_newer_segment(clean_db, dirs):
    _seed(clean_db)
    store = LocalFolder(dirs["cache"])
    with read_snapshot(clean_db) as conn:
        rebuild_index(conn, store, None)
    with read_snapshot(clean_db) as old:
        old.execute(text("SELECT 1"))  # the older snapshot is taken here
        with clean_db.begin() as conn:  # meanwhile: a rename, and segment 2 emptied
            conn.execute(text("UPDATE customers SET name = 'Newer' WHERE id = 1"))
            conn.execute(text("DELETE FROM orders WHERE customer_id = :c"), {"c": 2 * W + 5})
            conn.execute(text("DELETE FROM customers WHERE id = :c"), {"c": 2 * W + 5})
        with read_snapshot(clean_db) as new:
            newer = rebuild_index(new, store, [1, 2 * W + 5])
        assert newer.written == [0] and newer.removed == [2]
        older = rebuild_index(old, store, [1, 2 * W + 5])  # finishes last, with older data
    assert older.written == [] and older.superseded == [0, 2]
    segment = read_json(dirs["cache"] / segment_file(0))
    assert segment["watermark"] == newer.watermark
    assert [c["name"] for c in segment["customers"]][0] == "Newer"
    assert not (dirs["cache"] / segment_file(2)).exists()  # not brought back
    manifest = store.read_document(MANIFEST_FILE)
    entries = manifest_entries(manifest)
    assert entries[0].watermark == entries[2].watermark == int(newer.watermark)
    assert entries[2].count == 0
    assert int(manifest["watermark"]) >= int(newer.watermark)
    assert read_customers(store) == expected_index(clean_db)


def test_manifest_merges_commute_and_keep_the_newest_entry():
    from crm_pipeline.cache.customer_index import SegmentEntry

    def merged(*builds):
        manifest = None
        for watermark, entries in builds:
            manifest = merge_manifest(
                manifest, entries, watermark=watermark, schema_version=3, generated_at="t"
            )
        return manifest

    a = ("10", [SegmentEntry(0, 10, 5, 500), SegmentEntry(1, 10, 3, 300)])
    b = ("20", [SegmentEntry(1, 20, 0, 0)])
    c = ("15", [SegmentEntry(0, 15, 6, 600)])
    first, second = merged(a, b, c), merged(c, b, a)
    assert first["segments"] == second["segments"]
    assert first["watermark"] == second["watermark"] == "20"
    entries = manifest_entries(first)
    assert (entries[0].watermark, entries[0].count) == (15, 6)
    assert (entries[1].watermark, entries[1].count) == (20, 0)
    assert first["count"] == 6
