"""The status of the database: reachable, and its Alembic revision against this code's head.

The probe connects with a short timeout and reads everything else in one read-only snapshot
with a statement timeout, so a hung server makes `crm-pipeline status` fail quickly rather than
hang the monitor that runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from crm_pipeline.config import Settings, redact_url
from crm_pipeline.db.engine import resolve_database_url
from crm_pipeline.db.migrate import head_revision

CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT = "15s"

Problem = dict[str, str]


def problem(check: str, message: str) -> Problem:
    """One thing that needs attention: a stable `check` name and a message for people."""
    return {"check": check, "message": message}


@dataclass
class DatabaseStatus:
    """The `database` section, and the engine to read the rest with (None when unusable)."""

    section: dict[str, Any]
    engine: Engine | None = None
    problems: list[Problem] = field(default_factory=list)


def first_line(exc: BaseException) -> str:
    """The first line of an error (of its driver error when there is one): the actionable part,
    without the SQL or parameters SQLAlchemy appends."""
    cause = getattr(exc, "orig", None) or exc
    text_ = str(cause).strip()
    return text_.splitlines()[0] if text_ else type(cause).__name__


def database_status(settings: Settings) -> DatabaseStatus:
    """Connect to the configured database (the embedded one when `CRM_DATABASE_URL` is unset)
    and compare its schema revision with the newest this code ships."""
    head = head_revision()
    section: dict[str, Any] = {
        "url": None,
        "reachable": False,
        "error": None,
        "revision": None,
        "head": head,
        "at_head": None,
        "demo_database": None,
    }
    try:
        if settings.production and not settings.database_url:
            raise ValueError("CRM_DATABASE_URL is unset (production never starts the embedded one)")
        url = resolve_database_url(settings)
        section["url"] = redact_url(url)
        engine = create_engine(
            url,
            poolclass=NullPool,
            hide_parameters=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # any failure to reach it is the finding, not a crash
        section["error"] = first_line(exc)
        return DatabaseStatus(
            section, None, [problem("database_unreachable", f"database: {section['error']}")]
        )
    section.update(reachable=True, revision=revision, at_head=revision == head)
    if revision != head:
        message = (
            f"database schema is at revision {revision or 'none'}, this code needs {head}: "
            "run `crm-pipeline db upgrade`"
        )
        return DatabaseStatus(section, engine, [problem("database_not_at_head", message)])
    return DatabaseStatus(section, engine)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only REPEATABLE READ transaction: every figure of the report from the same
    moment, each statement cut off after `STATEMENT_TIMEOUT`."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            yield conn
