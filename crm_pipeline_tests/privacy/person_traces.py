"""Where a person's personal data could be: every table, cache file and raw Parquet file,
searched for their email, phone, name and PSID (Parquet decoded, nested values included)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from sqlalchemy import Engine, text


@dataclass(frozen=True)
class Needles:
    """One person's values, as they may be written anywhere."""

    email: str
    phone: str
    name: str
    psid: str

    def patterns(self) -> dict[str, re.Pattern]:
        digits = re.sub(r"\D", "", self.phone)
        return {
            "email": re.compile(re.escape(self.email), re.IGNORECASE),
            "phone": re.compile(re.escape(self.phone)),
            "phone digits": re.compile(rf"(?<!\d){digits}(?!\d)"),
            "name": re.compile(re.escape(self.name), re.IGNORECASE),
            "psid": re.compile(rf"(?<!\d){re.escape(self.psid)}(?!\d)"),
        }


def _hits(where: str, body: str, patterns: dict[str, re.Pattern]) -> list[str]:
    return [f"{what} in {where}" for what, p in patterns.items() if p.search(body)]


def table_traces(engine: Engine, needles: Needles) -> list[str]:
    """Every (value kind, table) where one of the values appears in some row of the table."""
    patterns = needles.patterns()
    found = []
    with engine.connect() as conn:
        tables = conn.execute(
            text(
                "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
                " FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ).scalars()
        for table in list(tables):
            rows = conn.execute(text(f"SELECT t::text FROM {table} AS t")).scalars()
            found += _hits(table, "\n".join(rows), patterns)
    return found


def file_traces(root: Path, needles: Needles) -> list[str]:
    """Every (value kind, file) under `root`: JSON and text as written, Parquet decoded."""
    patterns = needles.patterns()
    found = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            body = orjson.dumps(pq.read_table(path).to_pylist(), default=str).decode()
            # JSON strings inside cells (field_data, participants) are searched as written.
        else:
            body = path.read_bytes().decode("utf-8", "replace")
        found += _hits(str(path.relative_to(root)), body, patterns)
    return found
