"""Publishing cache files so they only move forward (invariant 7 in docs/architecture.md).

Whoever writes a file (the cache worker, a sensor run, an API miss, a materialisation from the
UI, an erasure), it is replaced only by a document whose watermark is at least the one already
published, and a removal is recorded the same way, so a slower writer holding an older snapshot
cannot bring a removed file back. Every writer comes through these functions; the store does
the comparing and writing:

- a `Path`: a file in a local folder, compared and written under an exclusive `flock` on a lock
  file beside it that records the last published watermark (`stores/local.py`);
- an `ObjectRef` (`Store.file` of an S3 store): an object compared by the watermark in its
  metadata and written by a conditional PUT on the ETag read, re-read on a lost race
  (`stores/s3.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crm_pipeline.cache.stores import ObjectRef, Outcome
from crm_pipeline.cache.stores.local import lock_path, publish_file, remove_file, update_file
from crm_pipeline.cachefile import envelope

__all__ = [
    "Outcome",
    "Where",
    "lock_path",
    "merge_document",
    "publish",
    "publish_document",
    "remove",
]

Where = Path | ObjectRef  # what `Store.file(relative)` gives


def publish_document(where: Where, document: dict[str, Any]) -> Outcome:
    """Write `document` (an envelope with a watermark) to `where` unless a newer one is there."""
    if isinstance(where, ObjectRef):
        return where.store.publish_document(where.relative, document)
    return publish_file(Path(where), document)


def publish(
    where: Where, payload: dict[str, Any], *, watermark: str, schema_version: int
) -> Outcome:
    """Wrap `payload` in the cache envelope and publish it forward-only (`publish_document`)."""
    return publish_document(
        where, envelope(payload, watermark=watermark, schema_version=schema_version)
    )


def merge_document(
    where: Where, merge: Callable[[dict[str, Any] | None], dict[str, Any]]
) -> Outcome:
    """Replace the document at `where` by `merge(current)` atomically (no write in between),
    forward-only: for a document several writers add to, such as the index manifest."""
    if isinstance(where, ObjectRef):
        return where.store.update_document(where.relative, merge)
    return update_file(Path(where), merge)


def remove(where: Where, *, watermark: str) -> bool:
    """Remove the file at `where` (its subject is gone, as of `watermark`) unless a newer file is
    there; True when a file existed. The removal is recorded like a write."""
    if isinstance(where, ObjectRef):
        return where.store.remove(where.relative, watermark)
    return remove_file(Path(where), watermark)
