"""The PostgreSQL tables of custom insights (`CRM_CUSTOM_INSIGHTS`), created at run time.

These tables are the user's declaration, not our schema: they are neither in `schema.py` nor in
the Alembic migrations, and each is a SQLAlchemy `Table` in its own `MetaData`, so migrations,
the schema checks and the test fixtures never see them. The first run of an entry creates its
table; a table that already exists must have exactly the entry's columns. When an entry changes
(a field or breakdown added, a type changed), the run stops and says so rather than altering or
dropping anything: the rows in the table are someone's data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import pyarrow as pa
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    MetaData,
    Numeric,
    Table,
    Text,
    func,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from crm_pipeline.config_values import ConfigError

__all__ = ["COLUMN_TYPES", "custom_table", "delete_unreported", "ensure_table"]

# A field's kind (crm_pipeline/facebook/fields.py, custom insights) -> its column type. Numbers
# are exact: Meta sends them as decimal strings, and PostgreSQL casts them on COPY.
COLUMN_TYPES = {"integer": BigInteger, "decimal": Numeric, "json": JSONB, "text": Text}
_DIALECT = postgresql.dialect()


def custom_table(
    name: str, ids: Iterable[str], breakdowns: Iterable[str], kinds: Mapping[str, str]
) -> Table:
    """The table of one entry: `ids` + `date` + one text column per breakdown (all of them the
    primary key: a breakdown never collapses rows) + one column per field + `synced_at`.

    A missing breakdown value is stored as '' (the key cannot hold NULL).
    """
    columns = [Column(i, Text, primary_key=True) for i in ids]
    columns.append(Column("date", Date, primary_key=True))
    columns += [Column(b, Text, primary_key=True, server_default=text("''")) for b in breakdowns]
    columns += [Column(field, COLUMN_TYPES[kind]()) for field, kind in kinds.items()]
    columns.append(
        Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    # The mirror delete of each load reads one account-day.
    index = Index(f"{name}_account_day", "account_id", "date")
    return Table(name, MetaData(), *columns, index)


def ensure_table(conn: Connection, table: Table) -> bool:
    """Create `table` if it does not exist (True when created), inside `conn`'s transaction.

    Raises ConfigError when a table of that name exists with other columns or another key.
    Runs for several accounts may start at once: a transaction-scoped advisory lock on the name
    makes one create the table and the others find it.
    """
    conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
        {"name": f"crm_pipeline.custom_table:{table.name}"},
    )
    inspector = inspect(conn)
    if not inspector.has_table(table.name):
        table.create(conn)
        return True
    found = {c["name"]: _type_name(c["type"]) for c in inspector.get_columns(table.name)}
    wanted = {c.name: _type_name(c.type) for c in table.c}
    found_key = inspector.get_pk_constraint(table.name).get("constrained_columns") or []
    wanted_key = [c.name for c in table.primary_key.columns]
    differences = _differences(found, wanted, found_key, wanted_key)
    if differences:
        raise ConfigError(
            f"table {table.name} exists with other columns than its CRM_CUSTOM_INSIGHTS entry "
            f"declares ({'; '.join(differences)}). Nothing was changed. Keep its rows by "
            f"renaming it (ALTER TABLE {table.name} RENAME TO {table.name}_old), or drop it if "
            f"they can go (DROP TABLE {table.name}), and the next run creates it anew; or give "
            "the entry another table name."
        )
    return False


def delete_unreported(
    conn: Connection, table: Table, account_id: str, day: str, rows: pa.Table
) -> int:
    """Delete the account-day's rows whose key is not among `rows` (what Meta reports for it
    now); how many went. `account_id` is Meta's (digits, no act_ prefix), as stored."""
    quote = conn.dialect.identifier_preparer.quote
    others = [c.name for c in table.primary_key.columns if c.name not in ("account_id", "date")]
    params: dict = {"account": account_id, "day": dt.date.fromisoformat(day)}
    statement = f"DELETE FROM {quote(table.name)} WHERE account_id = :account AND date = :day"
    if others:
        arrays = ", ".join(f"CAST(:k{i} AS text[])" for i in range(len(others)))
        columns = ", ".join(quote(c) for c in others)
        statement += f" AND ({columns}) NOT IN (SELECT * FROM unnest({arrays}))"
        params.update({f"k{i}": rows[c].to_pylist() for i, c in enumerate(others)})
    elif rows.num_rows:
        return 0  # an account-level row without breakdowns: the one row is reported
    return conn.execute(text(statement), params).rowcount


def _type_name(sql_type) -> str:
    return str(sql_type.compile(dialect=_DIALECT))


def _differences(
    found: dict[str, str], wanted: dict[str, str], found_key: list[str], wanted_key: list[str]
) -> list[str]:
    missing = [name for name in wanted if name not in found]
    extra = [name for name in found if name not in wanted]
    changed = [
        f"{name} is {found[name].lower()}, not {wanted[name].lower()}"
        for name in wanted
        if name in found and found[name] != wanted[name]
    ]
    differences = []
    if missing:
        differences.append(f"missing {', '.join(missing)}")
    if extra:
        differences.append(f"not declared {', '.join(extra)}")
    differences += changed
    if not missing and not extra and sorted(found_key) != sorted(wanted_key):
        differences.append(f"key ({', '.join(found_key)}), not ({', '.join(wanted_key)})")
    return differences
