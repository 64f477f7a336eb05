"""One atomic-write helper (crm_pipeline/atomic.py), and every writer goes through it."""

import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipeline import atomic, lake
from crm_pipeline.cache.publish import publish
from crm_pipeline.cachefile import write_json_atomic


@pytest.fixture
def synced_dirs(monkeypatch) -> list[Path]:
    """The directories whose entries the helper made durable (`atomic.fsync_dir` calls)."""
    seen: list[Path] = []
    real = atomic.fsync_dir

    def spy(path: Path) -> None:
        seen.append(Path(path))
        real(path)

    monkeypatch.setattr(atomic, "fsync_dir", spy)
    return seen


def test_a_write_is_fsynced_renamed_then_its_directory_fsynced(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    path = tmp_path / "sub" / "f.json"

    assert atomic.write_bytes_atomic(path, b"{}", mode=0o600) == 2

    assert events == ["fsync file", "rename", "fsync dir"]
    assert path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic.write_bytes_atomic(path, b"old")
    with pytest.raises(RuntimeError), atomic.replacing(path) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the cache's readers


def test_replace_dir_publishes_a_filled_directory_durably(tmp_path, synced_dirs):
    target = tmp_path / "snap"
    tmp = atomic.temp_dir_beside(target)
    assert tmp.parent == tmp_path and tmp.name.startswith(".snap.")
    (tmp / "a.txt").write_text("a")

    atomic.replace_dir(tmp, target)

    assert (target / "a.txt").read_text() == "a" and not tmp.exists()
    assert synced_dirs == [tmp, tmp_path]  # its entries, then the rename in the parent


def test_json_cache_files_go_through_the_helper(tmp_path, synced_dirs):
    write_json_atomic(tmp_path / "a" / "x.json", {"n": 1})
    publish(tmp_path / "b" / "y.json", {"n": 2}, watermark="3", schema_version=1)
    assert tmp_path / "a" in synced_dirs
    assert tmp_path / "b" in synced_dirs


def test_raw_and_quarantine_parquet_go_through_the_helper(tmp_path, synced_dirs):
    table = pa.table({"id": ["1"]})
    landed = lake.land_partition(tmp_path, "fb_ad_insights", "account=act_1/date=2026-01-02", table)
    synced = lake.land_sync(tmp_path, "campaigns", table)
    bad = [{"reason": "no id", "record": {"x": 1}}]
    kept = lake.write_quarantine(tmp_path, "campaigns", "latest", bad)
    assert {landed.parent, synced.parent, kept.parent} <= set(synced_dirs)
