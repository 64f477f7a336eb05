"""Checkpoints in `sync_state`: one JSON document per (stream, scope), e.g. a watermark."""

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from crm_pipeline.db.schema import sync_state


def get_state(conn: Connection, stream: str, scope: str) -> dict[str, Any]:
    """The stored state, or {} when the stream never ran for this scope."""
    row = conn.execute(
        select(sync_state.c.state).where(sync_state.c.stream == stream, sync_state.c.scope == scope)
    ).first()
    return dict(row.state) if row else {}


def put_state(conn: Connection, stream: str, scope: str, state: dict[str, Any]) -> None:
    """Store `state` (in the caller's transaction, so it commits with the data it describes)."""
    stmt = insert(sync_state).values(stream=stream, scope=scope, state=state)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[sync_state.c.stream, sync_state.c.scope],
            set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        )
    )
