"""Publishing cache files so they only move forward (invariant 7 in docs/architecture.md).

Whoever writes a file (the cache worker, a sensor run, an API miss, a materialisation from the
UI), it is replaced only by a document whose watermark is at least the one already published,
and writers of one file take turns: each holds an exclusive `flock` on a lock file beside it
(`.<name>.lock`) while it compares and writes. The lock file also records the last published
watermark, so the comparison does not have to parse the file (the index can be large); a lock
file that says nothing (first write, or written by an older version) falls back to the file.

The watermark is recorded before the file is renamed into place: after a crash between the two,
a writer with an older snapshot is refused and the next current one writes, so the file may
wait for the next change but never goes back.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from crm_pipeline.atomic import write_bytes_atomic
from crm_pipeline.cachefile import dumps, envelope


@dataclass(frozen=True)
class Outcome:
    """What a publish did: `written`, or refused because the file on disk is newer."""

    path: Path
    written: bool
    size: int  # bytes written (0 when refused)
    watermark: str  # of the document offered
    published_watermark: str | None  # the newest published before this call


def lock_path(path: Path) -> Path:
    """The lock file beside `path`."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _published(fd: int, path: Path) -> int | None:
    recorded = os.pread(fd, 64, 0).strip()
    if recorded.isdigit():
        return int(recorded)
    try:  # no record yet: the file's own watermark, if it has one
        watermark = str(orjson.loads(path.read_bytes()).get("watermark", ""))
    except (OSError, ValueError, AttributeError):
        return None
    return int(watermark) if watermark.isdigit() else None


def _record(fd: int, watermark: int) -> None:
    data = str(watermark).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def publish_document(path: Path, document: dict[str, Any]) -> Outcome:
    """Write `document` (an envelope with a watermark) to `path` unless a newer one is there."""
    watermark = int(document["watermark"])
    with _locked(path) as fd:
        current = _published(fd, path)
        before = None if current is None else str(current)
        if current is not None and watermark < current:
            return Outcome(path, False, 0, str(watermark), before)
        _record(fd, watermark)
        size = write_bytes_atomic(path, dumps(document))
    return Outcome(path, True, size, str(watermark), before)


def publish(path: Path, payload: dict[str, Any], *, watermark: str, schema_version: int) -> Outcome:
    """Wrap `payload` in the cache envelope and publish it forward-only (`publish_document`)."""
    return publish_document(
        path, envelope(payload, watermark=watermark, schema_version=schema_version)
    )


def remove(path: Path, *, watermark: str) -> bool:
    """Delete `path` (its subject is gone, as of `watermark`) unless a newer file is there.

    The removal is recorded like a write, so a slower writer holding an older snapshot, in
    which the subject still existed, cannot bring the file back.
    """
    with _locked(path) as fd:
        current = _published(fd, path)
        if current is not None and int(watermark) < current:
            return False
        _record(fd, int(watermark))
        existed = path.exists()
        path.unlink(missing_ok=True)
    return existed
