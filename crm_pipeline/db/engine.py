"""Resolving the source-of-truth database and building SQLAlchemy engines for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url

from crm_pipeline.config import Settings
from crm_pipeline.db import embedded

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def resolve_database_url(settings: Settings) -> str:
    """`CRM_DATABASE_URL` when set, else the embedded server under `CRM_DATA_DIR/pg`."""
    if settings.database_url:
        return settings.database_url
    return embedded.embedded_database_url(settings.pg_data_dir)


def get_engine(url: str) -> Engine:
    """One pooled engine per URL and process (assets, sensors and the CLI share it)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            # hide_parameters keeps row values (emails, phones) out of exception messages.
            engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests and the CLI call this before exiting)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only REPEATABLE READ transaction: every query sees one consistent snapshot.

    Cache builders read through this so a file never mixes data from before and after a write,
    and the change-log watermark they record matches exactly what they read.
    """
    with (
        engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        ) as conn,
        conn.begin(),
    ):
        yield conn


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as a libpq conninfo (psycopg, psql, pg_dump, dagster-postgres)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
