"""Cache files in a local folder (`CRM_CACHE_DIR`, or `CRM_CACHE_URL` set to a path).

Writers of one file take turns: each holds an exclusive `flock` on a lock file beside it
(`.<name>.lock`) while it compares and writes. The lock file also records the last published
watermark, so the comparison does not have to parse the file (the index can be large); a lock
file that says nothing (first write, or written by an older version) falls back to the file.

The watermark is recorded before the file is renamed into place: after a crash between the two,
a writer with an older snapshot is refused and the next current one writes, so the file may
wait for the next change but never goes back. The file itself is replaced atomically
(`crm_pipeline.atomic`: temporary name, fsync, rename), so a reader never sees it torn.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from crm_pipeline.atomic import write_bytes_atomic
from crm_pipeline.cache.stores.base import Fetched, Outcome, Signature, Store, watermark_of
from crm_pipeline.cachefile import dumps


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
        return watermark_of(path.read_bytes())
    except OSError:
        return None


def _record(fd: int, watermark: int) -> None:
    data = str(watermark).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def publish_file(path: Path, document: dict[str, Any]) -> Outcome:
    """Write `document` (an envelope with a watermark) to `path` unless a newer one is there."""
    with _locked(path) as fd:
        return _write_forward(fd, path, document)


def update_file(path: Path, merge: Callable[[dict[str, Any] | None], dict[str, Any]]) -> Outcome:
    """Replace `path` by `merge(current document)` under the file's lock, forward-only."""
    with _locked(path) as fd:
        try:
            current = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            current = None  # none yet, or unreadable: the merge starts afresh
        return _write_forward(fd, path, merge(current if isinstance(current, dict) else None))


def _write_forward(fd: int, path: Path, document: dict[str, Any]) -> Outcome:
    """Write `document` to `path` (its lock `fd` held) unless a newer one is recorded."""
    watermark = int(document["watermark"])
    published = _published(fd, path)
    before = None if published is None else str(published)
    if published is not None and watermark < published:
        return Outcome(path, False, 0, str(watermark), before)
    _record(fd, watermark)
    size = write_bytes_atomic(path, dumps(document))
    return Outcome(path, True, size, str(watermark), before)


def remove_file(path: Path, watermark: str) -> bool:
    """Delete `path` as of `watermark` unless a newer file is there; True if it existed.

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


class LocalFolder(Store):
    """Cache files under a local folder."""

    remote = False

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalFolder({self.url!r})"

    def file(self, relative: str) -> Path:
        return self.root / relative

    def where(self, relative: str) -> Path:
        return self.root / relative

    def publish_document(self, relative: str, document: dict[str, Any]) -> Outcome:
        return publish_file(self.root / relative, document)

    def update_document(
        self, relative: str, merge: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> Outcome:
        return update_file(self.root / relative, merge)

    def remove(self, relative: str, watermark: str) -> bool:
        return remove_file(self.root / relative, watermark)

    def fetch(self, relative: str, known: Signature | None = None) -> Fetched | None:
        """A hit on an unchanged file costs one `stat`: every publish renames a new inode into
        place, so a replaced file shows a new (inode, mtime, ctime, size) signature."""
        path = self.root / relative
        try:
            st = os.stat(path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            if signature == known:
                return Fetched(None, signature)
            return Fetched(path.read_bytes(), signature)
        except FileNotFoundError:
            return None

    def names(self, folder: str) -> list[str]:
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.glob("*.json"))
