"""The raw landing zone: Hive-style, readable by pyarrow.dataset and DuckDB, old layout moved."""

import datetime as dt
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crm_pipeline import lake
from crm_pipeline.lake import legacy

INSIGHTS = "fb_ad_insights"
ACCOUNTS = ("act_1", "act_2")
DAYS = ("2026-01-01", "2026-01-02")


def _insights(account: str, day: str, spend: str) -> pa.Table:
    """Raw insight rows as they land: all strings, with Meta's own account_id and date_start."""
    return pa.table(
        {
            "account_id": [account.removeprefix("act_")] * 2,
            "date_start": [day] * 2,
            "ad_id": ["a1", "a2"],
            "spend": [spend, spend],
        }
    )


def _rows(table: pa.Table, *columns: str) -> list[tuple]:
    return sorted(tuple(row[c] for c in columns) for row in table.to_pylist())


def _duckdb(root: Path, columns: str) -> list[tuple]:
    glob = f"{root}/**/*.parquet"
    return duckdb.sql(
        f"SELECT {columns} FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY ALL"
    ).fetchall()


def test_a_partition_lands_hive_style_and_relanding_replaces_it(tmp_path):
    for account in ACCOUNTS:
        for day in DAYS:
            partition = f"account={account}/date={day}"
            lake.land_partition(tmp_path, INSIGHTS, partition, _insights(account, day, "1"))
            path = lake.land_partition(tmp_path, INSIGHTS, partition, _insights(account, day, "2"))
            assert path.relative_to(tmp_path / "raw" / INSIGHTS).as_posix() == (
                f"account={account}/date={day}/part-0.parquet"
            )
    root = tmp_path / "raw" / INSIGHTS

    table = ds.dataset(root, partitioning="hive").to_table()
    assert {"account", "date"} <= set(table.column_names)
    rows = _rows(table, "account", "date", "ad_id", "spend")
    expected = sorted((a, d, ad, "2") for a in ACCOUNTS for d in DAYS for ad in ("a1", "a2"))
    assert rows == expected  # the second landing replaced the first: no duplicates

    found = _duckdb(root, "account, CAST(date AS VARCHAR), ad_id, spend")
    assert found == expected
    assert lake.read_partition(tmp_path, INSIGHTS, "account=act_2/date=2026-01-02").num_rows == 2


@pytest.mark.parametrize(
    "partition", ["latest", "date=account=act_1/date=2026-01-01", "account=a b", "a=1/a=2"]
)
def test_only_hive_partitions_are_accepted(tmp_path, partition):
    with pytest.raises(ValueError, match="Hive partition"):
        lake.raw_path(tmp_path, INSIGHTS, partition)


def test_a_column_named_like_a_partition_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="clash"):
        lake.land_partition(
            tmp_path, INSIGHTS, "account=act_1/date=2026-01-01", pa.table({"date": ["x"]})
        )
    with pytest.raises(ValueError, match="clash"):
        lake.land_sync(tmp_path, "campaigns", pa.table({"synced_at": ["x"]}))


def _at(minute: int) -> dt.datetime:
    return dt.datetime(2026, 1, 2, 3, minute, tzinfo=dt.UTC)


def test_syncs_land_by_time_and_the_loader_reads_the_newest(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialise"):
        lake.read_newest_sync(tmp_path, "campaigns")
    first = lake.land_sync(tmp_path, "campaigns", pa.table({"id": ["1"]}), synced_at=_at(1))
    lake.land_sync(tmp_path, "campaigns", pa.table({"id": ["2", "3"]}), synced_at=_at(2))
    assert first.parent.name == "synced_at=20260102T030100.000000Z"
    (first.parent.parent / "synced_at=20260102T030300.000000Z").mkdir()  # one being written

    assert lake.read_newest_sync(tmp_path, "campaigns")["id"].to_pylist() == ["2", "3"]
    root = tmp_path / "raw" / "campaigns"
    table = ds.dataset(root, partitioning="hive").to_table()
    assert _rows(table, "synced_at", "id") == [
        ("20260102T030100.000000Z", "1"),
        ("20260102T030200.000000Z", "2"),
        ("20260102T030200.000000Z", "3"),
    ]
    assert _duckdb(root, "synced_at, id") == [
        ("20260102T030100.000000Z", "1"),
        ("20260102T030200.000000Z", "2"),
        ("20260102T030200.000000Z", "3"),
    ]


def test_only_the_newest_syncs_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(lake.raw, "SYNCS_KEPT", 3)
    for minute in range(6):
        lake.land_sync(tmp_path, "ads", pa.table({"id": [str(minute)]}), synced_at=_at(minute))
    kept = sorted(p.name for p in (tmp_path / "raw" / "ads").iterdir())
    assert kept == [f"synced_at=20260102T03{m:02d}00.000000Z" for m in (3, 4, 5)]


def _legacy_tree(data_dir: Path) -> dict[Path, pa.Table]:
    """Files as the old layout left them, by their old path."""
    old: dict[Path, pa.Table] = {}
    for account in ACCOUNTS:
        for day in DAYS:
            path = data_dir / "raw" / INSIGHTS / f"date=account={account}" / f"date={day}"
            old[path / "data.parquet"] = _insights(account, day, f"{account}-{day}")
    for stream in ("campaigns", "leads"):
        old[data_dir / "raw" / stream / "date=latest" / "data.parquet"] = pa.table({"id": [stream]})
    for path, table in old.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    stamp = _at(30).timestamp()
    os.utime(data_dir / "raw" / "campaigns" / "date=latest" / "data.parquet", (stamp, stamp))
    return old


def _tree(data_dir: Path) -> list[str]:
    return sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())


def _check_new_layout(data_dir: Path) -> None:
    assert _tree(data_dir) == sorted(
        [f"raw/{INSIGHTS}/account={a}/date={d}/part-0.parquet" for a in ACCOUNTS for d in DAYS]
        + ["raw/campaigns/synced_at=20260102T033000.000000Z/part-0.parquet"]
        + [f"raw/leads/{lake.newest_sync(data_dir, 'leads').parent.name}/part-0.parquet"]
    )
    table = ds.dataset(data_dir / "raw" / INSIGHTS, partitioning="hive").to_table()
    assert sorted(set(_rows(table, "account", "spend"))) == sorted(
        (a, f"{a}-{d}") for a in ACCOUNTS for d in DAYS
    )
    assert table.num_rows == len(ACCOUNTS) * len(DAYS) * 2  # no duplicates
    assert lake.read_newest_sync(data_dir, "campaigns")["id"].to_pylist() == ["campaigns"]


def test_the_old_layout_is_moved_on_first_touch_and_only_once(tmp_path):
    _legacy_tree(tmp_path)
    # A partition landed anew before the move must not be overwritten by its stale old file.
    new = lake.raw_path(tmp_path, INSIGHTS, "account=act_1/date=2026-01-01")
    new.parent.mkdir(parents=True)
    pq.write_table(_insights("act_1", "2026-01-01", "act_1-2026-01-01"), new)
    stale = tmp_path / "raw" / INSIGHTS / "date=account=act_1" / "date=2026-01-01" / "data.parquet"
    pq.write_table(_insights("act_1", "2026-01-01", "stale"), stale)

    # Reading one partition is the first touch: it moves the whole zone.
    table = lake.read_partition(tmp_path, INSIGHTS, "account=act_2/date=2026-01-02")
    assert table["spend"].to_pylist() == ["act_2-2026-01-02"] * 2

    _check_new_layout(tmp_path)
    before = _tree(tmp_path)
    assert lake.migrate_legacy_layout(tmp_path) == 0
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("after_removal", [False, True])
def test_a_move_interrupted_anywhere_loses_nothing_and_is_finished_later(
    tmp_path, monkeypatch, after_removal
):
    old = _legacy_tree(tmp_path)
    real_unlink = Path.unlink
    unlinks = []

    def crash_on_third(self: Path, missing_ok: bool = False) -> None:
        if self.name == "data.parquet":
            unlinks.append(self)
        third = self.name == "data.parquet" and len(unlinks) == 3
        if third and after_removal:
            real_unlink(self, missing_ok=missing_ok)
        if third:  # just before or just after the old name of the third file goes
            raise KeyboardInterrupt("power cut")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(legacy.Path, "unlink", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        lake.migrate_legacy_layout(tmp_path)
    monkeypatch.undo()

    # Every file is still under its old name or its new one (or both), whole.
    for path, table in old.items():
        candidates = [path, *_new_names(tmp_path)]
        assert any(p.exists() and pq.read_table(p).equals(table) for p in candidates), path

    lake.migrate_legacy_layout(tmp_path)
    _check_new_layout(tmp_path)


def _new_names(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "raw").rglob("part-0.parquet")]
