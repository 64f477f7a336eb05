"""Reading `change_log` without ever missing a row (invariant 1 in docs/architecture.md).

Triggers stamp each change row with its writer's transaction id (`xid8`). A reader that stops
at the xmin of its own snapshot (`pg_snapshot_xmin(pg_current_snapshot())`) only ever sees
transaction ids that have finished: committed, so visible, or rolled back, so never visible.
No transaction below that bound can commit later, so a cursor at the bound never skips a row,
however commits interleave. A cursor on the auto-increment `id` does skip: a transaction that
took id 10 may commit after another that took id 11 was already read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

_SNAPSHOT_XMIN = "pg_snapshot_xmin(pg_current_snapshot())"

# Every change row sends '<txid>:<entity>:<customer>' here when its transaction commits
# (migration 0005): a wake-up, never the truth. <customer> is '' for none, '*' for a TRUNCATE.
CHANNEL = "crm_changes"
ALL_CUSTOMERS = "*"


@dataclass(frozen=True)
class ChangeNotice:
    """One notification on `CHANNEL`: a committed change to `entity` in transaction `txid`."""

    txid: int
    entity: str
    customer_id: int | None  # the customer it touches, if any
    all_customers: bool = False  # a TRUNCATE: every customer of `entity`

    @classmethod
    def parse(cls, payload: str) -> ChangeNotice | None:
        """The notice in `payload`, or None when it is not one of ours."""
        txid, _, rest = payload.partition(":")
        entity, _, customer = rest.partition(":")
        if not txid.isdigit() or not entity:
            return None
        if customer == ALL_CUSTOMERS:
            return cls(int(txid), entity, None, True)
        return cls(int(txid), entity, int(customer) if customer.isdigit() else None)


@dataclass(frozen=True)
class EntityChanges:
    """How many change rows one entity (table) had in a window, and how many distinct keys."""

    entity: str
    changes: int
    keys: int


@dataclass(frozen=True)
class ChangeWindow:
    """The changes in `[since, upto)` by entity; `upto` is the next cursor."""

    since: str | None
    upto: str
    entities: tuple[EntityChanges, ...]

    @property
    def entity_names(self) -> frozenset[str]:
        """The tables that changed in this window."""
        return frozenset(e.entity for e in self.entities)


def safe_upper_bound(conn: Connection) -> str:
    """The xid8 below which every transaction has finished, as of `conn`'s snapshot."""
    return conn.execute(text(f"SELECT {_SNAPSHOT_XMIN}::text")).scalar_one()


def read_change_window(
    conn: Connection, since: str | None, entities: Sequence[str] | None = None
) -> ChangeWindow:
    """Summarise change rows with `since <= txid < upper bound`, grouped by entity.

    `since` is the previous window's `upto` (None on the first read: everything so far).
    Pass the returned `upto` next time: each change row falls in exactly one window.
    """
    # The bound and the grouped rows in one statement (one snapshot, one round trip).
    rows = conn.execute(
        text(
            f"SELECT b.upto::text AS upto, e.entity, e.changes, e.keys"
            f" FROM (SELECT {_SNAPSHOT_XMIN} AS upto) b"
            " LEFT JOIN LATERAL ("
            "   SELECT entity, count(*) AS changes, count(DISTINCT entity_key) AS keys"
            "   FROM change_log"
            "   WHERE txid < b.upto"
            "     AND (CAST(:since AS xid8) IS NULL OR txid >= CAST(:since AS xid8))"
            "     AND (CAST(:entities AS text[]) IS NULL"
            "          OR entity = ANY(CAST(:entities AS text[])))"
            "   GROUP BY entity"
            " ) e ON true ORDER BY e.entity"
        ),
        {"since": since, "entities": list(entities) if entities else None},
    ).all()
    upto = rows[0].upto
    rows = [r for r in rows if r.entity is not None]
    return ChangeWindow(
        since=since,
        upto=upto,
        entities=tuple(EntityChanges(r.entity, r.changes, r.keys) for r in rows),
    )


def reflected_watermark(conn: Connection) -> str:
    """The change-log watermark of what `conn`'s snapshot can see, for cache files.

    Every change with `txid` below the returned value is visible to this snapshot, so a file
    built from it reflects them all; a change at or above it may not be reflected. It is the
    last finished change's txid + 1, so it only moves when something was written.
    """
    return conn.execute(
        text(
            "SELECT (coalesce(("
            f"  SELECT txid FROM change_log WHERE txid < {_SNAPSHOT_XMIN}"
            "   ORDER BY txid DESC LIMIT 1"
            ")::text::numeric, 0) + 1)::text"
        )
    ).scalar_one()


def changed_customers(
    conn: Connection,
    since: str | None,
    upto: str,
    limit: int,
    entities: Sequence[str] | None = None,
) -> tuple[list[int], bool]:
    """Distinct customers touched by changes to `entities` (default: any table) in
    `[since, upto)`, at most `limit`.

    Returns (ids, complete): `complete` is False when there were more than `limit`, or when a
    TRUNCATE of one of `entities` in the window touched every customer; the caller should then
    rebuild everything rather than a partial list. One round trip.
    """
    rows = conn.execute(
        text(
            "WITH w AS (SELECT customer_id, entity, op FROM change_log"
            "           WHERE txid < CAST(:upto AS xid8)"
            "             AND (CAST(:since AS xid8) IS NULL OR txid >= CAST(:since AS xid8))"
            "             AND (CAST(:entities AS text[]) IS NULL"
            "                  OR entity = ANY(CAST(:entities AS text[]))))"
            " (SELECT DISTINCT customer_id, false AS truncated FROM w"
            "  WHERE customer_id IS NOT NULL ORDER BY customer_id LIMIT :limit)"
            " UNION ALL"
            " SELECT NULL, true WHERE EXISTS (SELECT 1 FROM w WHERE op = 'truncate')"
        ),
        {
            "upto": upto,
            "since": since,
            "limit": limit + 1,
            "entities": list(entities) if entities is not None else None,
        },
    ).all()
    if any(r.truncated for r in rows):
        return [], False
    ids = [r.customer_id for r in rows]
    return ids[:limit], len(ids) <= limit


@dataclass(frozen=True)
class Unreflected:
    """Finished changes a cache file does not reflect yet: how many, and the oldest."""

    changes: int
    oldest: dt.datetime | None
    oldest_age_seconds: float | None  # by the database's clock


_UNREFLECTED = text(
    "SELECT count(*) AS changes, min(changed_at) AS oldest,"
    " extract(epoch FROM now() - min(changed_at)) AS oldest_age"
    f" FROM change_log WHERE txid < {_SNAPSHOT_XMIN}"
    "   AND (entity = ANY(CAST(:entities AS text[]))"
    "        OR (op = 'truncate' AND entity = ANY(CAST(:truncates_of AS text[]))))"
    "   AND (CAST(:watermark AS xid8) IS NULL OR txid >= CAST(:watermark AS xid8))"
    "   AND (CAST(:older_than AS interval) IS NULL"
    "        OR changed_at < now() - CAST(:older_than AS interval))"
)
_RECENT_CUSTOMERS = text(
    "SELECT l.customer_id, max(l.txid)::text AS txid, bool_or(c.id IS NOT NULL) AS exists"
    " FROM change_log l LEFT JOIN customers c ON c.id = l.customer_id"
    f" WHERE l.customer_id IS NOT NULL AND l.txid < {_SNAPSHOT_XMIN}"
    "   AND (CAST(:older_than AS interval) IS NULL"
    "        OR l.changed_at < now() - CAST(:older_than AS interval))"
    "   AND (CAST(:entities AS text[]) IS NULL OR l.entity = ANY(CAST(:entities AS text[])))"
    " GROUP BY l.customer_id ORDER BY max(l.txid) DESC LIMIT :limit"
)


def unreflected_changes(
    conn: Connection,
    entities: Sequence[str],
    watermark: str | None,
    *,
    older_than: dt.timedelta | None = None,
    truncates_of: Sequence[str] = (),
) -> Unreflected:
    """Finished changes to `entities` a file with `watermark` does not reflect (txid at or
    above it; every one when there is no file), and TRUNCATEs of `truncates_of`; only those
    older than `older_than` when given. The asset checks and `crm-pipeline status` both ask."""
    row = conn.execute(
        _UNREFLECTED,
        {
            "entities": list(entities),
            "truncates_of": list(truncates_of),
            "watermark": watermark,
            "older_than": older_than,
        },
    ).one()
    age = None if row.oldest_age is None else float(row.oldest_age)
    return Unreflected(row.changes, row.oldest, age)


def recently_changed_customers(
    conn: Connection,
    limit: int,
    *,
    older_than: dt.timedelta | None = None,
    entities: Sequence[str] | None = None,
) -> list[Any]:
    """The `limit` customers changed last by finished changes (older than `older_than` when
    given; to `entities` only, when given): rows of (customer_id, txid of their newest change
    as text, whether they exist)."""
    params = {
        "limit": limit,
        "older_than": older_than,
        "entities": None if entities is None else list(entities),
    }
    return conn.execute(_RECENT_CUSTOMERS, params).all()


def prune_change_log(conn: Connection, older_than_days: int) -> int:
    """Delete change rows older than `older_than_days`; return how many went.

    Safe while the sensor runs: it reads rows within seconds of their commit, so rows days old
    were consumed long ago.
    """
    return conn.execute(
        text("DELETE FROM change_log WHERE changed_at < now() - make_interval(days => :d)"),
        {"d": older_than_days},
    ).rowcount
