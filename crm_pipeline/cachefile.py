"""JSON cache files: atomic writes, and the envelope every file carries.

Readers (the UI, the API) must never see a torn file (DESIGN.md invariant 2), so a file is
written to a temporary name in the same directory, fsynced, and renamed over the old one.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    # Decimal (money) is written as a string-free JSON number with its exact digits.
    from decimal import Decimal

    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialise {type(value).__name__} into a cache file")


def envelope(payload: dict[str, Any], *, watermark: str, schema_version: int) -> dict[str, Any]:
    """`payload` with the top-level fields every cache file carries."""
    reserved = {"generated_at", "watermark", "schema_version"} & payload.keys()
    if reserved:
        raise ValueError(f"payload must not set {sorted(reserved)}")
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "watermark": watermark,
        "schema_version": schema_version,
        **payload,
    }


def dumps(document: dict[str, Any]) -> bytes:
    """Serialise a cache document (stable key order, so unchanged data gives unchanged bytes)."""
    return orjson.dumps(document, default=_default, option=_OPTIONS)


def write_json_atomic(path: Path, document: dict[str, Any]) -> int:
    """Write `document` to `path` atomically (temp file, fsync, rename); return its size."""
    return write_bytes_atomic(path, dumps(document))


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> int:
    """Write `data` to `path` atomically with permissions `mode` (0o600: the owner only, for
    local secrets such as the API's key snapshot); return its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; cache readers may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Persist the rename itself, or a crash could bring back the old file.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return len(data)


def read_json(path: Path) -> dict[str, Any]:
    """Read a cache file."""
    return orjson.loads(Path(path).read_bytes())
