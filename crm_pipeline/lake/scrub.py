"""Rewriting the personal streams' raw files without an erased person's rows.

Every Parquet file of `PERSONAL_STREAMS` under `raw/` and `quarantine/` is read; a file with a
row the predicate recognises is rewritten without those rows, atomically (readers see the old
file or the new one). A file replaced by a landing while it was being scrubbed is scrubbed again
from the new copy, so a landing is never undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipeline.atomic import replacing
from crm_pipeline.lake.layout import PERSONAL_STREAMS, QUARANTINE, RAW

_ATTEMPTS = 5


@dataclass
class ScrubReport:
    """What a scrub found and removed (counts only: never the rows)."""

    files_read: int = 0
    files_rewritten: int = 0
    rows_removed: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)  # rows removed per stream


def personal_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    """(stream, path) of every Parquet file of a personal stream, raw and quarantined."""
    for zone in (RAW, QUARANTINE):
        for stream in PERSONAL_STREAMS:
            folder = Path(data_dir) / zone / stream
            if folder.is_dir():
                for path in sorted(folder.rglob("*.parquet")):
                    if path.is_file() and not path.is_symlink():
                        yield stream, path


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _scrub_file(path: Path, matches: Callable[[dict[str, Any]], bool], dry_run: bool) -> int:
    """Rewrite `path` without matching rows; how many rows it removed (would remove).

    Raises _Replaced when a landing replaced the file meanwhile (the landing's file stays).
    """
    before = _stamp(path)
    if before is None:
        return 0
    with pq.ParquetFile(path) as file:
        table = file.read()
    keep = [not matches(row) for row in table.to_pylist()]
    removed = keep.count(False)
    if removed == 0 or dry_run:
        return removed
    kept = table.filter(pa.array(keep, pa.bool_()))
    with replacing(path) as fh:
        pq.write_table(kept, fh, compression="zstd")
        if _stamp(path) != before:
            raise _Replaced  # leaves the landing's file in place: scrub that one instead
    return removed


class _Replaced(Exception):
    pass


def scrub_personal_files(
    data_dir: Path, matches: Callable[[dict[str, Any]], bool], *, dry_run: bool = False
) -> ScrubReport:
    """Rewrite every personal-stream file of `data_dir` without the rows `matches` selects."""
    report = ScrubReport()
    for stream, path in personal_files(data_dir):
        report.files_read += 1
        removed = _scrub_with_retries(path, matches, dry_run)
        if removed:
            report.files_rewritten += 0 if dry_run else 1
            report.rows_removed += removed
            report.by_stream[stream] = report.by_stream.get(stream, 0) + removed
    return report


def _scrub_with_retries(path: Path, matches, dry_run: bool) -> int:
    for _ in range(_ATTEMPTS):
        try:
            return _scrub_file(path, matches, dry_run)
        except _Replaced:
            continue
    raise RuntimeError(f"{path} kept changing while it was being scrubbed; run the erase again")
