"""JSON cache files: atomic writes, and the envelope every file carries.

Readers (the UI, the API) must never see a torn file, so a file is written through
`crm_pipeline.atomic` (temporary name, fsync, rename, fsync of the directory; see
docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from crm_pipeline.atomic import write_bytes_atomic

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


def read_json(path: Path) -> dict[str, Any]:
    """Read a cache file."""
    return orjson.loads(Path(path).read_bytes())
