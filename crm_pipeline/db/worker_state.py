"""The cache worker's row in `cache_worker_state`: its heartbeat and progress watermark.

The worker writes it (`beat`); the change-log sensor reads it (`read_worker_state`) to skip
change windows a live worker has covered, and takes over when the heartbeat is old. Ages are
computed by the database clock, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class WorkerState:
    """A worker's last heartbeat, as of the reading transaction."""

    name: str
    watermark: str | None  # every change with txid below it has reached its files
    heartbeat_age_seconds: float
    host: str
    pid: int

    def alive(self, stale_after_seconds: float) -> bool:
        """Did it beat within `stale_after_seconds`?"""
        return self.heartbeat_age_seconds < stale_after_seconds


def read_worker_state(conn: Connection, name: str) -> WorkerState | None:
    """The row of worker `name`, or None when no worker of that name ever ran."""
    row = conn.execute(
        text(
            "SELECT name, watermark, extract(epoch FROM clock_timestamp() - heartbeat_at) AS age,"
            "       host, pid FROM cache_worker_state WHERE name = :name"
        ),
        {"name": name},
    ).first()
    if row is None:
        return None
    return WorkerState(row.name, row.watermark, float(row.age), row.host, row.pid)


def beat(conn: Connection, name: str, watermark: str | None, *, starting: bool = False) -> None:
    """Record a heartbeat of worker `name` (this process) and its watermark.

    The watermark never moves backwards: a replica taking over resumes from the stored one.
    """
    conn.execute(
        text(
            "INSERT INTO cache_worker_state (name, watermark, heartbeat_at, started_at, host, pid)"
            " VALUES (:name, :watermark, clock_timestamp(), clock_timestamp(), :host, :pid)"
            " ON CONFLICT (name) DO UPDATE SET"
            "   watermark = CASE"
            "     WHEN cache_worker_state.watermark IS NULL THEN EXCLUDED.watermark"
            "     WHEN EXCLUDED.watermark IS NULL THEN cache_worker_state.watermark"
            "     WHEN CAST(EXCLUDED.watermark AS numeric)"
            "          > CAST(cache_worker_state.watermark AS numeric) THEN EXCLUDED.watermark"
            "     ELSE cache_worker_state.watermark END,"
            "   heartbeat_at = clock_timestamp(),"
            "   started_at = CASE WHEN :starting THEN clock_timestamp()"
            "                     ELSE cache_worker_state.started_at END,"
            "   host = EXCLUDED.host, pid = EXCLUDED.pid"
        ),
        {
            "name": name,
            "watermark": watermark,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "starting": starting,
        },
    )


def retire(conn: Connection, name: str) -> None:
    """Mark worker `name` stopped (a clean shutdown): its heartbeat is aged past any threshold,
    so the change-log sensor takes over at its next tick instead of waiting for it to go stale.
    A standby replica that takes the lock beats again and is alive at once."""
    conn.execute(
        text(
            "UPDATE cache_worker_state SET heartbeat_at = 'epoch'"
            " WHERE name = :name AND host = :host AND pid = :pid"
        ),
        {"name": name, "host": socket.gethostname(), "pid": os.getpid()},
    )
