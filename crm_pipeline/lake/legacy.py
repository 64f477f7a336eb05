"""Moving raw files of the old layout into the current one (docs/architecture.md).

The old layout prefixed `date=` to every partition and named every file `data.parquet`:
insights landed under `raw/<stream>/date=account=<id>/date=<day>/` and the synced streams under
`raw/<stream>/date=latest/`. The move is idempotent and safe to interrupt or to run from several
processes at once: each file is hard-linked to its new name (which never replaces a file landed
in the new layout: that one is newer) before the old name is removed, so at every moment the
rows are under at least one of the two names, and the next run finishes the job.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from contextlib import suppress
from pathlib import Path

from crm_pipeline.atomic import fsync_dir
from crm_pipeline.lake.layout import RAW, raw_path, sync_partition

_PREFIX = "date="
_FILE = "data.parquet"
_SYNCED = "latest"  # the old name of the partition of a synced stream


_migrated: set[Path] = set()  # data dirs this process has moved already
_migrated_lock = threading.Lock()


def migrate_legacy_layout_once(data_dir: Path) -> None:
    """:func:`migrate_legacy_layout` once per data dir and process, before its first read or
    write: this version never writes the old layout, so one pass finds everything, and a
    range's hundreds of landings do not each scan the lake again."""
    key = Path(data_dir).resolve()
    with _migrated_lock:
        if key in _migrated:
            return
    migrate_legacy_layout(data_dir)
    with _migrated_lock:
        _migrated.add(key)


def migrate_legacy_layout(data_dir: Path) -> int:
    """Move every raw file of the old layout into the current one; return how many moved."""
    moved = 0
    for legacy in sorted((Path(data_dir) / RAW).glob(f"*/{_PREFIX}*")):
        old_partition = legacy.name.removeprefix(_PREFIX)
        if old_partition != _SYNCED and not old_partition.startswith("account="):
            continue  # a current partition keyed by date, not a legacy one
        for old in sorted(legacy.rglob(_FILE)):
            try:
                new = _destination(Path(data_dir), legacy.parent, old)
            except FileNotFoundError:
                continue  # moved by another process meanwhile
            except ValueError:
                continue  # not a partition we can place: left where it is
            moved += _move(old, new)
        _remove_empty_dirs(legacy)
    return moved


def _destination(data_dir: Path, stream_dir: Path, old: Path) -> Path:
    partition = old.parent.relative_to(stream_dir).as_posix().removeprefix(_PREFIX)
    if partition == _SYNCED:
        # The file's time is its sync's: it stays stable if a move is interrupted and retried.
        synced_at = dt.datetime.fromtimestamp(old.stat().st_mtime, dt.UTC)
        partition = sync_partition(synced_at)
    return raw_path(data_dir, stream_dir.name, partition)


def _move(old: Path, new: Path) -> int:
    """Link `old` as `new` unless `new` exists, then remove `old`; 1 when this call linked."""
    new.parent.mkdir(parents=True, exist_ok=True)
    linked = 0
    try:
        os.link(old, new)
        fsync_dir(new.parent)
        linked = 1
    except FileExistsError:
        pass  # moved by an interrupted or concurrent run, or landed anew: keep the new name
    except FileNotFoundError:
        return 0  # another process finished this move meanwhile
    old.unlink(missing_ok=True)
    return linked


def _remove_empty_dirs(legacy: Path) -> None:
    """Remove the emptied directories of the old layout, deepest first."""
    dirs = sorted((p for p in legacy.rglob("*") if p.is_dir()), reverse=True)
    for path in [*dirs, legacy]:
        # OSError: not empty (a stray file is left alone) or removed by another run.
        with suppress(OSError):
            path.rmdir()
    if not legacy.exists():
        fsync_dir(legacy.parent)
