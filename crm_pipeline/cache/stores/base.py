"""What every cache store offers: forward-only publish and remove, conditional reads, listings.

A store is where the cache files live: a local folder (`local.py`) or an S3 bucket and prefix
(`s3.py`). Writers name a file by its path relative to the cache root (`customers/7.json`);
`Store.file` turns that into what `crm_pipeline.cache.publish` takes (a `Path` in a local
folder, an `ObjectRef` in a bucket), so every writer goes through the same publish/remove.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# How a store recognises an unchanged file without reading it again: the `stat` of a local
# file, the ETag of an object.
Signature = Hashable


class StoreUnavailable(OSError):
    """The store did not answer, or refused (no bucket, no credentials). The message names the
    store and the kind of failure, never a credential."""


@dataclass(frozen=True)
class Outcome:
    """What a publish did: `written`, or refused because the published file is newer."""

    path: Path | str  # the file (a local path, or the object's s3:// URL)
    written: bool
    size: int  # bytes written (0 when refused)
    watermark: str  # of the document offered
    published_watermark: str | None  # the newest published before this call


@dataclass(frozen=True)
class Fetched:
    """A file read from a store: its bytes, or None when unchanged since the signature given."""

    body: bytes | None
    signature: Signature


@dataclass(frozen=True)
class ObjectRef:
    """One file of a remote store, as `publish`/`remove` take it."""

    store: Store
    relative: str

    def __str__(self) -> str:
        return str(self.store.where(self.relative))


class Store(ABC):
    """A cache root: a local folder or a bucket prefix (see the module docstring)."""

    url: str  # where it is, for messages and metadata (a path, or s3://bucket/prefix)
    remote: bool  # reads cost a network round trip

    @abstractmethod
    def file(self, relative: str) -> Path | ObjectRef:
        """The file `relative` as `crm_pipeline.cache.publish` takes it."""

    @abstractmethod
    def where(self, relative: str) -> Path | str:
        """The file or folder `relative`, for metadata and messages."""

    @abstractmethod
    def publish_document(self, relative: str, document: dict[str, Any]) -> Outcome:
        """Write `document` unless a document with a newer watermark is published there."""

    @abstractmethod
    def update_document(
        self, relative: str, merge: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> Outcome:
        """Replace the document at `relative` by `merge(current)` with no other write in between
        (`current` None: no readable document). `merge` may be called again when another writer
        got in first, so it must be pure; a result older than the published watermark is refused
        like any publish."""

    @abstractmethod
    def remove(self, relative: str, watermark: str) -> bool:
        """Remove the file as of `watermark` unless a newer one is there; True if one existed."""

    @abstractmethod
    def fetch(self, relative: str, known: Signature | None = None) -> Fetched | None:
        """The file's bytes and signature; `body` None when its signature is still `known`;
        None when there is no file. Raises StoreUnavailable when the store does not answer."""

    @abstractmethod
    def names(self, folder: str) -> list[str]:
        """The names of the `.json` files directly in `folder` (e.g. `7.json`)."""

    def read_document(self, relative: str) -> dict[str, Any] | None:
        """The parsed file (None when there is none); raises ValueError when it is not JSON."""
        fetched = self.fetch(relative)
        if fetched is None or fetched.body is None:
            return None
        return orjson.loads(fetched.body)


def watermark_of(body: bytes) -> int | None:
    """The watermark a cache document records (None when it has none it can be compared by)."""
    try:
        watermark = str(orjson.loads(body).get("watermark", ""))
    except (ValueError, AttributeError):
        return None
    return int(watermark) if watermark.isdigit() else None
