"""Cache files only move forward, whoever writes them (cache/publish.py)."""

import multiprocessing
import random

import orjson

from crm_pipeline.cache.publish import lock_path, publish, remove
from crm_pipeline.cachefile import envelope, write_json_atomic


def _watermark(path) -> int:
    return int(orjson.loads(path.read_bytes())["watermark"])


def test_an_older_document_never_replaces_a_newer_one(tmp_path):
    path = tmp_path / "customers" / "7.json"
    assert publish(path, {"name": "new"}, watermark="20", schema_version=1).written
    refused = publish(path, {"name": "old"}, watermark="19", schema_version=1)
    assert not refused.written and refused.published_watermark == "20"
    assert orjson.loads(path.read_bytes())["name"] == "new"
    # The same watermark may be written again (e.g. a summary whose day rolled over).
    assert publish(path, {"name": "again"}, watermark="20", schema_version=1).written
    assert publish(path, {"name": "newer"}, watermark="21", schema_version=1).written
    assert orjson.loads(path.read_bytes())["name"] == "newer"


def test_a_removal_is_not_undone_by_a_slower_writer(tmp_path):
    path = tmp_path / "customers" / "8.json"
    publish(path, {"name": "x"}, watermark="5", schema_version=1)
    assert remove(path, watermark="9")  # deleted as of 9
    assert not path.exists()
    # A writer whose snapshot (8) still saw the customer must not bring the file back.
    assert not publish(path, {"name": "x"}, watermark="8", schema_version=1).written
    assert not path.exists()
    assert not remove(path, watermark="8")


def test_a_file_from_before_lock_files_is_compared_by_its_own_watermark(tmp_path):
    path = tmp_path / "analytics" / "summary.json"
    write_json_atomic(path, envelope({"v": "on disk"}, watermark="50", schema_version=1))
    assert not lock_path(path).exists()
    assert not publish(path, {"v": "older"}, watermark="49", schema_version=1).written
    assert orjson.loads(path.read_bytes())["v"] == "on disk"


def _writer(path: str, watermarks: list[int], go) -> None:
    from pathlib import Path

    go.wait()  # all writers start together, so their writes interleave
    for w in watermarks:
        publish(Path(path), {"w": w, "pad": "x" * 20_000}, watermark=str(w), schema_version=1)


def test_racing_writers_in_other_processes_leave_the_newest(tmp_path):
    path = tmp_path / "customers" / "9.json"
    rng = random.Random(14)
    watermarks = list(range(1, 1201))
    rng.shuffle(watermarks)
    chunks = [watermarks[i::4] for i in range(4)]
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), c, go)) for c in chunks]
    for p in procs:
        p.start()
    go.set()
    seen = []
    while any(p.is_alive() for p in procs):
        if path.exists():
            seen.append(_watermark(path))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    # Observed by a reader: never backwards; at the end: the newest of all.
    assert seen == sorted(seen)
    assert _watermark(path) == 1200
    assert sorted(p.name for p in path.parent.iterdir()) == [".9.json.lock", "9.json"]
