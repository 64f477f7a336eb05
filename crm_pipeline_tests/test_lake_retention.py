"""The raw zone's retention (`lake.retention.prune_raw`): what goes, what stays, and why."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipeline import lake
from crm_pipeline.lake import retention
from crm_pipeline.lake.retention import UnsafeLayout, prune_raw

NOW = dt.datetime.now(dt.UTC)
CUTOFF = NOW - dt.timedelta(days=30)
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=2)
INSIGHTS = "fb_ad_insights"


def _table(value: str) -> pa.Table:
    return pa.table({"id": [value], "email": [f"{value}@example.com"]})


def _age(path: Path, when: dt.datetime) -> Path:
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _day(data: Path, day: str, landed: dt.datetime, stream: str = INSIGHTS) -> Path:
    path = lake.land_partition(data, stream, f"account=act_1/date={day}", _table(day))
    return _age(path, landed)


def _sync(data: Path, stream: str, synced_at: dt.datetime, value: str) -> Path:
    return lake.land_sync(data, stream, _table(value), synced_at=synced_at)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_old_landings_go_recent_ones_stay_and_emptied_directories_are_removed(tmp_path):
    old_day = _day(tmp_path, "2026-01-01", OLD)
    relanded = _day(tmp_path, "2026-01-02", RECENT)  # an old day landed again: fresh data
    old_sync = _sync(tmp_path, "leads", OLD, "old")
    # A sync's stamp says when it landed, whatever its file's time (an erasure rewrote it).
    new_sync = _age(_sync(tmp_path, "leads", RECENT, "new"), OLD)
    leftover = old_day.parent / ".part-0.parquet.crashed.tmp"  # left by a crashed write
    leftover.write_bytes(b"x" * 10)
    _age(leftover, OLD)
    sizes = {p: p.stat().st_size for p in (old_day, old_sync, leftover)}

    report = prune_raw(tmp_path, CUTOFF)

    assert not old_day.exists() and not old_sync.exists() and not leftover.exists()
    assert relanded.exists() and new_sync.exists()
    assert not old_day.parent.exists() and not old_sync.parent.exists()  # emptied: removed
    assert relanded.parent.parent.is_dir()  # still holds a kept day
    assert report.by_stream() == {
        INSIGHTS: {
            "files": 2,
            "bytes": sizes[old_day] + sizes[leftover],
            "quarantine_files": 0,
            "quarantine_bytes": 0,
        },
        "leads": {
            "files": 1,
            "bytes": sizes[old_sync],
            "quarantine_files": 0,
            "quarantine_bytes": 0,
        },
    }
    assert (report.raw_files, report.directories) == (3, 2)
    assert lake.read_newest_sync(tmp_path, "leads")["id"].to_pylist() == ["new"]


def test_a_stream_with_every_landing_expired_is_removed_whole_and_reads_fail_clearly(tmp_path):
    _sync(tmp_path, "messages", OLD, "a")
    _sync(tmp_path, "messages", OLD + dt.timedelta(hours=1), "b")
    report = prune_raw(tmp_path, CUTOFF)
    assert report.raw["messages"].files == 2
    assert not (tmp_path / "raw" / "messages").exists()
    assert (tmp_path / "raw").is_dir()  # the zone itself stays
    with pytest.raises(FileNotFoundError, match="CRM_RAW_RETENTION_DAYS"):
        lake.read_newest_sync(tmp_path, "messages")
    with pytest.raises(FileNotFoundError, match="CRM_RAW_RETENTION_DAYS"):
        lake.read_partition(tmp_path, INSIGHTS, "account=act_1/date=2026-01-01")


def test_a_stopped_prune_leaves_the_newest_syncs_never_an_older_one_as_newest(
    tmp_path, monkeypatch
):
    """Syncs go oldest first: a prune that fails half-way leaves the stream's newest syncs, so
    the loads read the newest sync or fail, never upsert an older sync over newer rows."""
    for hours, value in ((0, "oldest"), (1, "middle"), (2, "newest")):
        _sync(tmp_path, "leads", OLD + dt.timedelta(hours=hours), value)
    real_unlink, calls = os.unlink, []

    def failing_second_unlink(path, *, dir_fd=None):
        calls.append(path)
        if len(calls) == 2:
            raise PermissionError(13, "injected", path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(retention.os, "unlink", failing_second_unlink)
    with pytest.raises(PermissionError):
        prune_raw(tmp_path, CUTOFF)
    monkeypatch.undo()
    assert lake.read_newest_sync(tmp_path, "leads")["id"].to_pylist() == ["newest"]


def test_quarantine_files_follow_their_raw_partition(tmp_path):
    """The insights loads read a quarantine file as "do not delete unreported rows": it must
    not go while its partition stays, even when its own time says it is old."""
    kept_day = _day(tmp_path, "2026-01-02", RECENT)
    bad = [{"reason": "spend is not a number", "record": {"email": "x@example.com"}}]
    kept_bad = lake.write_quarantine(tmp_path, INSIGHTS, "account=act_1/date=2026-01-02", bad)
    _age(kept_bad, OLD)
    _day(tmp_path, "2026-01-01", OLD)
    old_bad = _age(
        lake.write_quarantine(tmp_path, INSIGHTS, "account=act_1/date=2026-01-01", bad), OLD
    )
    old_latest = _age(lake.write_quarantine(tmp_path, "leads", "latest", bad), OLD)
    new_latest = lake.write_quarantine(tmp_path, "messages", "latest", bad)

    report = prune_raw(tmp_path, CUTOFF)

    assert kept_day.exists() and kept_bad.exists() and new_latest.exists()
    assert not old_bad.exists() and not old_latest.exists()
    assert not (tmp_path / "quarantine" / "leads").exists()
    assert {s: r.files for s, r in report.quarantine.items()} == {INSIGHTS: 1, "leads": 1}


def test_links_are_never_followed_and_nothing_outside_the_zones_is_touched(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    victim = outside / "part-0.parquet"
    victim.write_bytes(b"not ours")
    _age(victim, OLD)
    _day(data, "2026-01-01", OLD)
    (data / "raw" / "linked_stream").symlink_to(outside, target_is_directory=True)
    (data / "raw" / INSIGHTS / "account=act_1" / "date=2026-01-05").mkdir()
    (data / "raw" / INSIGHTS / "account=act_1" / "date=2026-01-05" / "part-0.parquet").symlink_to(
        victim
    )
    beside = [data / "pg" / "old.bin", data / "snapshots" / "t" / "leads.parquet"]
    for path in beside:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"keep")
        _age(path, OLD)

    report = prune_raw(data, CUTOFF)

    assert victim.exists() and victim.read_bytes() == b"not ours"
    assert all(path.exists() for path in beside)
    assert (data / "raw" / "linked_stream").is_symlink()
    assert report.links_skipped == 2 and report.raw_files == 1


@pytest.mark.parametrize("zone", ["raw", "quarantine"])
def test_a_zone_that_is_a_link_is_refused_before_anything_is_removed(tmp_path, zone):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    old_day = _day(elsewhere, "2026-01-01", OLD)
    data.mkdir()
    if zone == "quarantine":
        old_day = _day(data, "2026-01-01", OLD)
    (data / zone).symlink_to(elsewhere / zone if zone == "raw" else elsewhere)
    with pytest.raises(UnsafeLayout, match="never follows links"):
        prune_raw(data, CUTOFF)
    assert old_day.exists()


def test_an_empty_directory_a_landing_just_made_is_left_alone(tmp_path):
    fresh = tmp_path / "raw" / "leads" / "synced_at=20990101T000000.000000Z"
    fresh.mkdir(parents=True)  # a land_sync between its mkdir and its file
    stale = tmp_path / "raw" / "leads" / "synced_at=20000101T000000.000000Z"
    stale.mkdir()
    _age(stale, OLD)
    prune_raw(tmp_path, CUTOFF)
    assert fresh.is_dir() and not stale.exists()


def test_a_missing_data_dir_prunes_nothing_and_a_naive_cutoff_is_refused(tmp_path):
    report = prune_raw(tmp_path / "absent", CUTOFF)
    assert report.raw_files == 0 and report.by_stream() == {}
    with pytest.raises(ValueError, match="timezone-aware"):
        prune_raw(tmp_path, CUTOFF.replace(tzinfo=None))
