"""The customer index in segments: customers by id range plus a small manifest.

A change rewrites only the segments of the customers it names (O(changed), like the 360 files),
and a reader reloads only the segments whose manifest entry moved. Under the cache root:

- `customers/index/<segment>.json`: the customers with `segment * SEGMENT_WIDTH <= id <
  (segment + 1) * SEGMENT_WIDTH`, in id order. A customer's segment is `id // SEGMENT_WIDTH`
  and never moves; a segment left with no customer has no file.
- `customers/index.json`, the manifest (the index's fixed name, DESIGN.md: readers start
  here): per segment its `count`, `bytes` and `watermark` (count 0: removed, kept so that an
  older writer cannot bring it back), the totals, and `full_watermark`, the newest full
  rebuild merged in: a segment it does not list held no customer as of that watermark. Until
  schema version 3 this file held every customer itself; a reader of version 3 follows
  `segments` to `customers/index/<segment>.json`.

Every segment is a cache file like any other (envelope, atomic, forward-only). The manifest is
updated by a merge (`merge_manifest`), atomic in the store: each segment keeps the entry with
the newest watermark, whoever wrote last, and the manifest's watermark is the newest build
merged into it. Writers publish segments first and merge the manifest after, so an entry never
names a segment older than its file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from crm_pipeline.cache.stores import Store

INDEX_DIR = "customers/index"
# The manifest keeps the index's fixed name (DESIGN.md); a version-2 list found there is
# replaced by the first merge (another schema is never merged into).
MANIFEST_FILE = "customers/index.json"
# Customers per segment (by id range). At ~280 bytes a customer a segment is ~0.6 MB: one
# write costs that much whatever the size of the customer base.
SEGMENT_WIDTH = 2048
# Segments built per query in a full rebuild: memory stays flat for any number of customers.
FULL_BATCH_SEGMENTS = 16

# One row per customer of the given id ranges, with order and lead totals from the same
# ranges (index scans on customer_id), in id order.
_ROWS = text(
    """
WITH r AS (SELECT * FROM unnest(CAST(:los AS bigint[]), CAST(:his AS bigint[])) AS r(lo, hi)),
o AS (SELECT o.customer_id, count(*) AS orders, sum(o.amount) AS revenue
      FROM r JOIN orders o ON o.customer_id >= r.lo AND o.customer_id < r.hi
      WHERE o.status = ANY(:statuses) GROUP BY o.customer_id),
l AS (SELECT l.customer_id, count(*) AS leads
      FROM r JOIN leads l ON l.customer_id >= r.lo AND l.customer_id < r.hi
      GROUP BY l.customer_id)
SELECT c.id, c.name, c.email, c.phone, c.tier, c.updated_at,
       coalesce(o.orders, 0) AS orders, coalesce(o.revenue, 0) AS revenue,
       coalesce(l.leads, 0) AS leads
FROM r JOIN customers c ON c.id >= r.lo AND c.id < r.hi
LEFT JOIN o ON o.customer_id = c.id
LEFT JOIN l ON l.customer_id = c.id
ORDER BY c.id
"""
)
_SEGMENTS_IN_USE = text("SELECT DISTINCT id / :w AS segment FROM customers ORDER BY 1")


def segment_of(customer_id: int) -> int:
    """The segment holding `customer_id` (fixed: it never moves)."""
    return customer_id // SEGMENT_WIDTH


def segment_file(segment: int) -> str:
    """The relative path of segment `segment`."""
    return f"{INDEX_DIR}/{segment}.json"


def segments_of(customer_ids: Iterable[int]) -> list[int]:
    """The segments holding `customer_ids`, sorted, each once."""
    return sorted({segment_of(i) for i in customer_ids})


def sortable_time(value: dt.datetime | None) -> str | None:
    """A timestamp as UTC ISO 8601 with microseconds: one fixed width, so the strings sort as
    the times do (the API sorts by `updated_at` without parsing it)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _customer(row: Any) -> dict[str, Any]:
    customer = row._asdict()
    customer["updated_at"] = sortable_time(row.updated_at)
    return customer


def build_segments(
    conn: Connection, segments: Sequence[int], revenue_statuses: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """The payloads of `segments` that hold a customer in `conn`'s snapshot (an empty segment
    is absent from the result)."""
    wanted = sorted(set(segments))
    params = {
        "los": [s * SEGMENT_WIDTH for s in wanted],
        "his": [(s + 1) * SEGMENT_WIDTH for s in wanted],
        "statuses": list(revenue_statuses),
    }
    rows: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(_ROWS, params):
        rows.setdefault(segment_of(row.id), []).append(_customer(row))
    return {s: segment_payload(s, customers) for s, customers in rows.items()}


def segment_payload(segment: int, customers: list[dict[str, Any]]) -> dict[str, Any]:
    """A segment's document (before the cache envelope)."""
    return {
        "segment": segment,
        "first_id": segment * SEGMENT_WIDTH,
        "last_id": (segment + 1) * SEGMENT_WIDTH - 1,
        "count": len(customers),
        "customers": customers,
    }


def segments_in_use(conn: Connection) -> list[int]:
    """Every segment holding a customer in `conn`'s snapshot."""
    return list(conn.execute(_SEGMENTS_IN_USE, {"w": SEGMENT_WIDTH}).scalars())


def batches(segments: Sequence[int], size: int = FULL_BATCH_SEGMENTS) -> Iterator[list[int]]:
    """`segments` in batches of `size`, for a full rebuild."""
    for start in range(0, len(segments), size):
        yield list(segments[start : start + size])


# --- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentEntry:
    """What the manifest says of one segment: written (or removed, count 0) at `watermark`."""

    segment: int
    watermark: int
    count: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        """The entry as the manifest lists it."""
        return {
            "segment": self.segment,
            "path": segment_file(self.segment),  # from the cache root
            "count": self.count,
            "bytes": self.bytes,
            "watermark": str(self.watermark),
        }


def manifest_entries(manifest: dict[str, Any] | None) -> dict[int, SegmentEntry]:
    """The manifest's entries by segment (none when there is no usable manifest)."""
    entries = {}
    listed = (manifest or {}).get("segments", [])
    for item in listed if isinstance(listed, list) else []:
        try:
            entry = SegmentEntry(
                int(item["segment"]), int(item["watermark"]), int(item["count"]), int(item["bytes"])
            )
        except (KeyError, TypeError, ValueError):
            continue  # not an entry this code wrote
        entries[entry.segment] = entry
    return entries


def usable_manifest(manifest: dict[str, Any] | None, schema_version: int) -> bool:
    """Is `manifest` one this code wrote (layout and schema), so segments can be merged in?"""
    return (
        isinstance(manifest, dict)
        and manifest.get("schema_version") == schema_version
        and manifest.get("segment_width") == SEGMENT_WIDTH
        and str(manifest.get("watermark", "")).isdigit()
    )


def merge_manifest(
    current: dict[str, Any] | None,
    entries: Iterable[SegmentEntry],
    *,
    watermark: str,
    schema_version: int,
    generated_at: str,
    full: bool = False,
) -> dict[str, Any]:
    """The manifest after merging `entries` (built at `watermark`; `full`: every segment in
    use then) into `current`.

    Per segment the entry with the newer watermark wins (an equal one: the new), and the
    watermarks only grow, so merges commute and the manifest only moves forward whatever order
    writers finish in. A manifest of another layout or schema is replaced, not merged.
    """
    usable = usable_manifest(current, schema_version)
    merged = manifest_entries(current) if usable else {}
    for entry in entries:
        known = merged.get(entry.segment)
        if known is None or entry.watermark >= known.watermark:
            merged[entry.segment] = entry
    newest, full_mark = int(watermark), int(watermark) if full else 0
    if usable:
        newest = max(newest, int(current["watermark"]))
        full_mark = max(full_mark, full_watermark(current))
    listed = [merged[s] for s in sorted(merged)]
    return {
        "generated_at": generated_at,
        "watermark": str(newest),
        "full_watermark": str(full_mark),
        "schema_version": schema_version,
        "segment_width": SEGMENT_WIDTH,
        "count": sum(e.count for e in listed),
        "bytes": sum(e.bytes for e in listed),
        "segments": [e.as_json() for e in listed],
    }


def full_watermark(manifest: dict[str, Any] | None) -> int:
    """The newest full rebuild merged into `manifest` (0: none): a segment the manifest does
    not list held no customer as of it."""
    mark = str((manifest or {}).get("full_watermark", ""))
    return int(mark) if mark.isdigit() else 0


def customers_behind(
    manifest: dict[str, Any] | None, changed: Iterable[tuple[int, str, bool]]
) -> list[int]:
    """Of recently changed customers (id, txid of their newest change, whether they exist),
    those whose segment does not reflect that change: missing while the customer exists, or
    listed at a watermark at or below the change. The asset check and `crm-pipeline status`
    both ask."""
    entries = manifest_entries(manifest)
    behind = []
    for customer_id, txid, exists in changed:
        entry = entries.get(segment_of(customer_id))
        if entry is None or (exists and entry.count == 0):
            stale = exists  # no segment (or a removed one) for a customer that exists
        else:
            stale = entry.watermark <= int(txid)
        if stale:
            behind.append(customer_id)
    return sorted(behind)


def read_customers(store: Store) -> list[dict[str, Any]] | None:
    """Every customer the index in `store` lists, in id order (None: no manifest). It reads
    every segment: for tools, tests and small caches; the API keeps its own memory instead."""
    manifest = store.read_document(MANIFEST_FILE)
    if manifest is None:
        return None
    customers: list[dict[str, Any]] = []
    for segment, entry in sorted(manifest_entries(manifest).items()):
        if entry.count:
            document = store.read_document(segment_file(segment)) or {"customers": []}
            customers += document["customers"]
    return customers
