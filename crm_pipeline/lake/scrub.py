"""Rewriting Parquet files without an erased person's rows (or with them anonymised).

The files are the raw and quarantined files of `PERSONAL_STREAMS` and the tables of local
database snapshots (`CRM_DATA_DIR/snapshots/<stamp>/<table>.parquet`). A file where `rewrite`
drops or changes a row is written anew, atomically (readers see the old file or the new one). A
file replaced by a landing while it was being scrubbed is scrubbed again from the new copy, so a
landing is never undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipeline.atomic import replacing
from crm_pipeline.lake.layout import PERSONAL_STREAMS, QUARANTINE, RAW

SNAPSHOTS = "snapshots"
_ATTEMPTS = 5
# (what the file holds: a stream or a table, a row) -> the row to keep, or None to drop it.
Rewrite = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass
class ScrubReport:
    """What a scrub found and changed (counts only: never the rows)."""

    files_read: int = 0
    files_rewritten: int = 0
    rows_removed: int = 0
    rows_anonymised: int = 0
    by_file: dict[str, int] = field(default_factory=dict)  # what holds them -> rows changed
    rewritten: list[Path] = field(default_factory=list)


def personal_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    """(stream, path) of every Parquet file of a personal stream, raw and quarantined."""
    for zone in (RAW, QUARANTINE):
        for stream in PERSONAL_STREAMS:
            yield from _files(Path(data_dir) / zone / stream, stream, "*.parquet")


def snapshot_files(data_dir: Path, tables: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """(table, path) of each of `tables` in every local database snapshot."""
    root = Path(data_dir) / SNAPSHOTS
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            for table in tables:
                yield from _files(folder, table, f"{table}.parquet")


def _files(folder: Path, label: str, pattern: str) -> Iterator[tuple[str, Path]]:
    if folder.is_dir() and not folder.is_symlink():
        for path in sorted(folder.rglob(pattern)):
            if path.is_file() and not path.is_symlink():
                yield label, path


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class _Replaced(Exception):
    """A landing replaced the file while it was being scrubbed."""


def _scrub_file(path: Path, label: str, rewrite: Rewrite, dry_run: bool) -> tuple[int, int]:
    """Rewrite `path`; (rows removed, rows anonymised), done or (dry run) that would be.

    Raises _Replaced when a landing replaced the file meanwhile (the landing's file stays).
    """
    before = _stamp(path)
    if before is None:
        return 0, 0
    with pq.ParquetFile(path) as file:
        table = file.read()
    rows = table.to_pylist()
    new = [rewrite(label, row) for row in rows]
    removed = sum(1 for r in new if r is None)
    changed = sum(1 for old, r in zip(rows, new, strict=True) if r is not None and r != old)
    if (removed == 0 and changed == 0) or dry_run:
        return removed, changed
    kept = pa.Table.from_pylist([r for r in new if r is not None], schema=table.schema)
    with replacing(path) as fh:
        pq.write_table(kept, fh, compression="zstd")
        if _stamp(path) != before:
            raise _Replaced  # leaves the landing's file in place: scrub that one instead
    return removed, changed


def _scrub_with_retries(path: Path, label: str, rewrite: Rewrite, dry_run: bool):
    for _ in range(_ATTEMPTS):
        try:
            return _scrub_file(path, label, rewrite, dry_run)
        except _Replaced:
            continue
    raise RuntimeError(f"{path} kept changing while it was being scrubbed; run the erase again")


def scrub_files(
    files: Iterable[tuple[str, Path]], rewrite: Rewrite, *, dry_run: bool = False
) -> ScrubReport:
    """Rewrite each of `files` as `rewrite` says (nothing is written on a dry run)."""
    report = ScrubReport()
    for label, path in files:
        report.files_read += 1
        removed, changed = _scrub_with_retries(path, label, rewrite, dry_run)
        if removed or changed:
            report.rows_removed += removed
            report.rows_anonymised += changed
            report.by_file[label] = report.by_file.get(label, 0) + removed + changed
            if not dry_run:
                report.files_rewritten += 1
                report.rewritten.append(path)
    return report


def scrub_personal_files(
    data_dir: Path, matches: Callable[[dict[str, Any]], bool], *, dry_run: bool = False
) -> ScrubReport:
    """Rewrite every personal-stream file of `data_dir` without the rows `matches` selects."""
    return scrub_files(
        personal_files(data_dir),
        lambda _stream, row: None if matches(row) else row,
        dry_run=dry_run,
    )
