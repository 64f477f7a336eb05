"""What a clone did: per-table figures, the printed verification table, progress.

Progress (tables done of all, the current table's rows and rows/s) goes through
`crm_pipeline.progress`: a bar on a terminal, plain lines elsewhere, on the stream given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Rows between two progress updates of one table: COPY yields a chunk per row, and an update
# per row would cost more than the copy. The display decides when to print.
PROGRESS_EVERY = 10_000


class CloneError(ValueError):
    """The clone cannot start or did not verify; the message is safe to print."""


@dataclass
class TableReport:
    """One table's copy and verification figures."""

    table: str
    rows: int = 0
    seconds: float = 0.0
    source_count: int | None = None
    source_checksum: int | None = None
    target_count: int | None = None
    target_checksum: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.source_count is not None
            and self.source_count == self.target_count == self.rows
            and self.source_checksum == self.target_checksum
        )


@dataclass
class CloneResult:
    """What a clone did; `target` is printable (passwords masked)."""

    target: str
    kind: str  # "postgres" | "parquet"
    masked: bool
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0
    snapshot_at: str = ""

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def format_table(self) -> str:
        """The verification table printed at the end of `clone-db`."""
        lines = [
            f"{'table':<20} {'rows':>10} {'source checksum':>22} {'target checksum':>22}  ok",
        ]
        for t in self.tables:
            lines.append(
                f"{t.table:<20} {t.rows:>10} {t.source_checksum!s:>22} "
                f"{t.target_checksum!s:>22}  {'yes' if t.ok else 'NO'}"
            )
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines.append(
            f"{len(self.tables)} tables, {self.rows} rows in {self.seconds:.2f}s "
            f"({rate:,.0f} rows/s){', PII masked' if self.masked else ''}"
        )
        return "\n".join(lines)


def finish(result: CloneResult, started: float) -> CloneResult:
    """Stamp the duration; raise CloneError when any table did not verify."""
    result.seconds = time.monotonic() - started
    if not result.ok:
        bad = ", ".join(t.table for t in result.tables if not t.ok)
        raise CloneError(f"clone did not verify (row count or checksum differs): {bad}")
    return result
