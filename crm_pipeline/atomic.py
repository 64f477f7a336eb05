"""Atomic, durable replacement of files and directories: the one way this project writes.

Readers (the UI, the API, the loaders, DuckDB) must never see a torn file, and a crash must not
bring back an old one (docs/architecture.md, invariants). So every write goes to a temporary
name in the target's directory, is flushed and fsynced, renamed over the target, and the
directory is fsynced so that the rename itself is on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Persist the entries of directory `path` (a rename or a link inside it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Persist the contents of a file written by a library that owns its file handle."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def replacing(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace `path` atomically when the block ends.

    `mode` is the new file's permissions (0o600: the owner only, for local secrets). When the
    block raises, `path` is left as it was and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot name ending in .tmp: dataset readers skip hidden files and `*.parquet` globs miss it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; cache readers may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> int:
    """Write `data` to `path` atomically with permissions `mode`; return its size."""
    with replacing(path, mode) as fh:
        fh.write(data)
    return len(data)


def temp_dir_beside(target: Path) -> Path:
    """A new empty directory next to `target`, to fill and then `replace_dir` into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))


def replace_dir(tmp: Path, target: Path) -> None:
    """Rename the filled directory `tmp` to `target` (absent or empty) atomically and durably.

    The files inside `tmp` must already be fsynced (`fsync_file`, or written by `replacing`).
    """
    fsync_dir(tmp)  # the files' directory entries, before the directory becomes visible
    os.replace(tmp, target)
    fsync_dir(target.parent)
