"""Running the Alembic migrations programmatically (`crm-pipeline db upgrade`, demo, tests)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from crm_pipeline.config import ConfigError, redact_url
from crm_pipeline.db.engine import get_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Migrate the database at `url` to `revision`; return the revision it is at afterwards."""
    cfg = alembic_config()
    engine = get_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(url)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (e.g. "base")."""
    cfg = alembic_config()
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class DatabaseNotMigrated(ConfigError):
    """The database's schema is not the one this code was written for."""


_checked: set[str] = set()
_checked_lock = threading.Lock()


def require_migrated(url: str) -> None:
    """Raise DatabaseNotMigrated unless the database is at this package's head revision.

    Checked once per process and URL, so a run against an empty or outdated database stops
    with what to do, instead of failing later on a missing table or column.
    """
    if url in _checked:
        return
    current, head = current_revision(url), head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"the database at {redact_url(url)} is at schema revision {current or 'none'}, "
            f"this code needs {head}: run `crm-pipeline db upgrade`"
        )
    with _checked_lock:
        _checked.add(url)
