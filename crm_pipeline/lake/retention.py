"""Retention of the raw landing zone: files landed before a cutoff are removed.

Lead Ads answers and Messenger messages land here as they came from Meta, so the zone must not
keep them for ever (`CRM_RAW_RETENTION_DAYS`; the Dagster asset `personal_data_retention` calls
`prune_raw` daily). The rules, and why:

- **Landed when.** A `synced_at=<stamp>` landing is as old as its stamp: a later rewrite of the
  file (an erasure scrub) does not make its rows younger. Any other file (a date partition, a
  quarantine file, a temporary file left by a crash) is as old as its modification time: a date
  partition the attribution re-sync landed again yesterday holds yesterday's data.
- **Oldest first.** Entries are visited in name order, and `synced_at=` stamps sort
  chronologically, so a stream's syncs go oldest first. At every moment, and after a failure
  half-way, what is left is a stream's newest syncs: `read_newest_sync` finds the newest sync
  or none, never an older one in its place (the loads would upsert stale rows over newer ones).
- **Quarantine files** (`CRM_DATA_DIR/quarantine`) go by their modification time, but never
  while the raw partition they belong to is kept: the insights loads read a quarantine file's
  presence as "do not delete the rows Meta did not report", and without it they would delete.
- **Inside the zone only.** Each directory is opened relative to its parent without following
  links, so nothing outside `raw/` and `quarantine/` is ever read or removed: links are left
  where they are (and counted), and `raw/` or `quarantine/` being a link is refused.
- **Emptied directories** are removed. A directory that was empty already goes only when it is
  older than the cutoff too: a landing may have just created it for its file.

A landing that re-lands an expired date partition at the very moment it is pruned can lose its
file; the partition's load then fails, naming the missing file (it never loads less).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from crm_pipeline.lake.layout import PART_FILE, QUARANTINE, RAW, sync_time
from crm_pipeline.lake.legacy import migrate_legacy_layout_once

__all__ = ["PruneReport", "Removed", "UnsafeLayout", "prune_raw"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ZONES = (RAW, QUARANTINE)  # raw first: the quarantine rule needs to know what raw kept


class UnsafeLayout(RuntimeError):
    """The landing zone cannot be pruned without leaving the data dir (a link in its place)."""


@dataclass
class Removed:
    """Files removed and their bytes (of one stream, in one zone)."""

    files: int = 0
    bytes: int = 0


@dataclass
class PruneReport:
    """What `prune_raw` removed: counts and bytes per stream, never a file's contents."""

    cutoff: dt.datetime
    raw: dict[str, Removed] = field(default_factory=dict)  # by stream
    quarantine: dict[str, Removed] = field(default_factory=dict)  # by stream
    directories: int = 0
    links_skipped: int = 0

    @property
    def raw_files(self) -> int:
        return sum(r.files for r in self.raw.values())

    @property
    def raw_bytes(self) -> int:
        return sum(r.bytes for r in self.raw.values())

    @property
    def quarantine_files(self) -> int:
        return sum(r.files for r in self.quarantine.values())

    @property
    def quarantine_bytes(self) -> int:
        return sum(r.bytes for r in self.quarantine.values())

    def by_stream(self) -> dict[str, dict[str, int]]:
        """{stream: {files, bytes, quarantine_files, quarantine_bytes}} of every pruned stream."""
        none = Removed()
        return {
            stream: {
                "files": self.raw.get(stream, none).files,
                "bytes": self.raw.get(stream, none).bytes,
                "quarantine_files": self.quarantine.get(stream, none).files,
                "quarantine_bytes": self.quarantine.get(stream, none).bytes,
            }
            for stream in sorted(set(self.raw) | set(self.quarantine))
        }


def prune_raw(data_dir: Path, older_than: dt.datetime) -> PruneReport:
    """Remove every raw and quarantine file under `data_dir` landed before `older_than` (an
    aware datetime), and the directories that leaves empty; report what went, per stream.

    Raises UnsafeLayout when `raw/` or `quarantine/` is a link (or not a directory), before
    anything is removed; an OSError while removing stops the prune with the oldest gone first.
    """
    if older_than.tzinfo is None or older_than.utcoffset() is None:
        raise ValueError("older_than must be a timezone-aware datetime")
    report = PruneReport(older_than.astimezone(dt.UTC))
    root = Path(data_dir)
    if not root.is_dir():
        return report
    for zone in _ZONES:
        _check_zone(root, zone)
    # As every reader does first: files of the old layout move into the current one.
    migrate_legacy_layout_once(root)
    pruner = _Pruner(report)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for zone in _ZONES:
            try:
                zone_fd = os.open(zone, _DIR_FLAGS, dir_fd=root_fd)
            except FileNotFoundError:
                continue
            except OSError as error:  # replaced by a link since _check_zone
                raise UnsafeLayout(_unsafe_message(root, zone)) from error
            try:
                pruner.prune_dir(zone_fd, (), zone)
            finally:
                os.close(zone_fd)
    finally:
        os.close(root_fd)
    return report


def _check_zone(root: Path, zone: str) -> None:
    try:
        mode = (root / zone).lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise UnsafeLayout(_unsafe_message(root, zone))


def _unsafe_message(root: Path, zone: str) -> str:
    return (
        f"{root / zone} is a link or not a directory: the raw retention never follows links "
        "out of CRM_DATA_DIR; point CRM_DATA_DIR at the real location instead"
    )


def _landed_at(parts: tuple[str, ...], info: os.stat_result) -> float:
    """When a raw file landed (a POSIX timestamp): its sync's stamp, else its mtime."""
    for part in parts:
        synced_at = sync_time(part)
        if synced_at is not None:
            return synced_at.timestamp()
    return info.st_mtime


class _Pruner:
    """One pass over the zones: removes expired files, remembers the raw partitions kept."""

    def __init__(self, report: PruneReport) -> None:
        self.report = report
        self.cutoff = report.cutoff.timestamp()
        self.kept: set[tuple[str, str]] = set()  # (stream, partition) of raw files kept

    def prune_dir(self, fd: int, parts: tuple[str, ...], zone: str) -> tuple[bool, bool]:
        """Prune the directory open as `fd` (`parts`: its path below `zone`).

        Returns (left empty, removed anything below it).
        """
        empty, removed = True, False
        with os.scandir(fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)  # oldest sync first
        for entry in entries:
            if entry.is_symlink():
                self.report.links_skipped += 1
                empty = False
            elif entry.is_dir(follow_symlinks=False):
                gone, below = self._prune_subdir(fd, entry.name, (*parts, entry.name), zone)
                empty, removed = empty and gone, removed or below
            elif (
                entry.is_file(follow_symlinks=False)
                and parts
                and self._prune_file(fd, entry, parts, zone)
            ):
                removed = True
            else:  # kept, a file of no stream (directly in the zone), or a special file
                empty = False
        return empty, removed

    def _prune_subdir(
        self, fd: int, name: str, parts: tuple[str, ...], zone: str
    ) -> tuple[bool, bool]:
        """Prune the subdirectory `name` of `fd`, and remove it when that left it empty."""
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return True, False  # removed meanwhile (a sync beyond SYNCS_KEPT)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self.report.links_skipped += 1  # became a link since it was listed: not followed
            return False, False
        try:
            empty, removed = self.prune_dir(child, parts, zone)
            stale = os.fstat(child).st_mtime < self.cutoff
        finally:
            os.close(child)
        if not empty or not (removed or stale):
            return False, removed
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:  # a landing wrote into it meanwhile, or another prune removed it
            return False, removed
        self.report.directories += 1
        return True, True

    def _prune_file(self, fd: int, entry: os.DirEntry, parts: tuple[str, ...], zone: str) -> bool:
        """Remove the file when it landed before the cutoff; True when it is gone."""
        info = entry.stat(follow_symlinks=False)
        stream, partition = parts[0], "/".join(parts[1:])
        if zone == RAW:
            expired = _landed_at(parts, info) < self.cutoff
            if not expired and entry.name == PART_FILE:
                self.kept.add((stream, partition))
        else:
            expired = info.st_mtime < self.cutoff and (stream, partition) not in self.kept
        if not expired:
            return False
        try:
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            return True  # removed meanwhile
        zone_report = self.report.raw if zone == RAW else self.report.quarantine
        removed = zone_report.setdefault(stream, Removed())
        removed.files += 1
        removed.bytes += info.st_size
        return True
