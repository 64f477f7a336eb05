"""What the API knows about one cache file: `CacheKey`, one per file of the cache registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from crm_pipeline.cache import registry


@dataclass(frozen=True)
class CacheKey:
    """One cache file: where it lives, what it depends on and how to build it."""

    name: str
    path: str  # relative to the cache dir
    schema_version: int
    entities: tuple[str, ...]  # change_log entities that make it stale
    build: Callable[[Connection], dict[str, Any] | None]  # None: the resource does not exist
    customer_id: int | None = None  # only this customer's changes make it stale ...
    shared: tuple[str, ...] = ()  # ... and changes to these tables (read for every customer)


def file_key(file: registry.CacheFile) -> CacheKey:
    """The key of a single registry file."""
    return CacheKey(file.asset, file.file(), file.schema_version, file.reads, file.build)


def customer_key(customer_id: int) -> CacheKey:
    """The key of one customer's 360 file."""
    profiles = registry.CUSTOMER_PROFILES
    return CacheKey(
        f"customer:{customer_id}",
        profiles.file(customer_id),
        profiles.schema_version,
        profiles.reads,
        lambda conn: registry.build_customer_profile(conn, customer_id),
        customer_id=customer_id,
        shared=profiles.shared,
    )
