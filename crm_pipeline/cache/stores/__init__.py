"""Where cache files live: a local folder or an S3-compatible bucket (`CRM_CACHE_URL`).

`open_store` turns a location (a `Store`, a folder path, or `s3://bucket/prefix`) into a store;
`crm_pipeline.cache.publish` writes through it, forward-only, whichever it is. See
docs/architecture.md ("Cache stores").
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from crm_pipeline.cache.stores.base import (
    Fetched,
    ObjectRef,
    Outcome,
    Signature,
    Store,
    StoreUnavailable,
)
from crm_pipeline.cache.stores.local import LocalFolder
from crm_pipeline.config_values import parse_cache_url

if TYPE_CHECKING:
    from crm_pipeline.config import Settings

__all__ = [
    "Fetched",
    "LocalFolder",
    "Location",
    "ObjectRef",
    "Outcome",
    "Signature",
    "Store",
    "StoreUnavailable",
    "open_store",
    "store_from_settings",
]

Location = Store | Path | str  # what every writer's `cache_dir` argument may be

# One client per bucket, prefix and endpoint in a process: a boto3 client costs milliseconds
# to build and keeps a connection pool; it is safe to share between threads.
_remote: dict[tuple[str, str, str | None], Store] = {}
_remote_lock = threading.Lock()


def open_store(location: Location, *, endpoint_url: str | None = None) -> Store:
    """The store at `location`: a `Store` as it is, `s3://bucket/prefix` (at `endpoint_url`, else
    boto3's own endpoint resolution), or a local folder."""
    if isinstance(location, Store):
        return location
    if isinstance(location, Path):
        return LocalFolder(location)
    bucket_prefix = parse_cache_url(location)
    if bucket_prefix is None:
        return LocalFolder(Path(location))
    bucket, prefix = bucket_prefix
    with _remote_lock:
        store = _remote.get((bucket, prefix, endpoint_url))
        if store is None:
            from crm_pipeline.cache.stores.s3 import S3Store, new_client

            store = S3Store(bucket, prefix, client=new_client(endpoint_url))
            _remote[(bucket, prefix, endpoint_url)] = store
    return store


def store_from_settings(settings: Settings) -> Store:
    """The store the settings name: `CRM_CACHE_URL`, else the folder `CRM_CACHE_DIR`."""
    return open_store(settings.cache_location, endpoint_url=settings.cache.s3_endpoint_url)
