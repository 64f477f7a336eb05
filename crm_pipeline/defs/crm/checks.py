"""Data-contract checks on the PostgreSQL tables: natural keys unique, required columns set,
tables not empty. They run after each materialisation of their table (and on demand from the
UI), so a bad write by another app or a drifted migration shows up on the asset, not in a
customer's cache file.

Uniqueness is checked on the *natural* key people rely on, which is not always what a
constraint enforces: customers are matched on the trimmed, lower-cased email, but the unique
constraint is on `email` as stored, so `Ana@x.io` and `ana@x.io ` can both be there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
from sqlalchemy import Connection, text

from crm_pipeline.defs.resources import PostgresResource

_SAMPLE = 5  # offending keys shown in the check's metadata


@dataclass(frozen=True)
class TableContract:
    """What a table promises: its natural key, its required columns, that it has rows."""

    table: str  # also the asset key
    unique: tuple[str, ...]  # SQL expressions forming the natural key
    required: tuple[str, ...]  # columns that must never be NULL (ERROR)
    expected: tuple[str, ...] = ()  # columns that should be set, with known exceptions (WARN)
    why_expected: str = ""


CONTRACTS = (
    TableContract(
        "ad_insights_daily",
        unique=("ad_id", "date"),
        required=("account_id", "campaign_id", "adset_id", "ad_id", "date", "spend"),
    ),
    TableContract("campaigns", unique=("id",), required=("account_id",), expected=("name",)),
    TableContract(
        "adsets", unique=("id",), required=("account_id", "campaign_id"), expected=("name",)
    ),
    TableContract(
        "ads",
        unique=("id",),
        required=("account_id", "campaign_id", "adset_id"),
        expected=("name",),
    ),
    TableContract(
        "leads",
        unique=("id",),
        required=("form_id", "created_time"),
        expected=("customer_id",),
        why_expected="a lead with neither email nor phone cannot be matched to a customer",
    ),
    TableContract(
        "conversations",
        unique=("id",),
        required=("page_id",),
        expected=("customer_id",),
        why_expected="a PSID not yet known to the CRM stays unlinked",
    ),
    TableContract("messages", unique=("id",), required=("conversation_id", "created_time")),
    TableContract(
        "customers",
        unique=("lower(btrim(email))",),
        required=("tier",),
        expected=("coalesce(email, phone, fb_psid)",),
        why_expected="a customer with no email, phone or Messenger id cannot be contacted",
    ),
    TableContract(
        "orders",
        unique=("external_id",),
        required=("customer_id", "amount", "currency", "status", "created_at"),
    ),
)


def duplicate_keys(conn: Connection, contract: TableContract) -> tuple[int, list[str]]:
    """How many natural-key values occur more than once, and a few of them."""
    key = ", ".join(contract.unique)
    present = " AND ".join(f"({expr}) IS NOT NULL" for expr in contract.unique)
    rows = conn.execute(
        text(
            f"SELECT concat_ws('|', {key}) AS k, count(*) OVER () AS n FROM {contract.table}"
            f" WHERE {present} GROUP BY {key} HAVING count(*) > 1 ORDER BY 1 LIMIT {_SAMPLE}"
        )
    ).all()
    return (rows[0].n if rows else 0), [r.k for r in rows]


def null_counts(conn: Connection, table: str, columns: tuple[str, ...]) -> dict[str, int]:
    """Rows with NULL in each column (or expression)."""
    if not columns:
        return {}
    selects = ", ".join(f"count(*) FILTER (WHERE ({c}) IS NULL)" for c in columns)
    counts = conn.execute(text(f"SELECT {selects} FROM {table}")).one()
    return dict(zip(columns, counts, strict=True))


def _contract_results(conn: Connection, contract: TableContract) -> Iterator[dg.AssetCheckResult]:
    asset = contract.table
    duplicates, sample = duplicate_keys(conn, contract)
    yield dg.AssetCheckResult(
        asset_key=asset,
        check_name="natural_key_unique",
        passed=duplicates == 0,
        metadata={
            "key": ", ".join(contract.unique),
            "duplicate_keys": duplicates,
            **({"sample": dg.MetadataValue.json(sample)} if sample else {}),
        },
    )
    required = null_counts(conn, asset, contract.required)
    yield dg.AssetCheckResult(
        asset_key=asset,
        check_name="required_columns_not_null",
        passed=not any(required.values()),
        metadata={"null_rows": dg.MetadataValue.json(required)},
    )
    if contract.expected:
        expected = null_counts(conn, asset, contract.expected)
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name="expected_columns_set",
            passed=not any(expected.values()),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"null_rows": dg.MetadataValue.json(expected)},
            description=f"Exceptions are possible: {contract.why_expected}.",
        )
    rows = conn.execute(text(f"SELECT count(*) FROM {asset}")).scalar_one()
    yield dg.AssetCheckResult(
        asset_key=asset,
        check_name="row_count",
        passed=rows > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"row_count": rows},
    )


def _specs(contract: TableContract) -> list[dg.AssetCheckSpec]:
    asset = contract.table
    specs = [
        dg.AssetCheckSpec(
            "natural_key_unique",
            asset=asset,
            description=f"No two rows share the natural key ({', '.join(contract.unique)}).",
        ),
        dg.AssetCheckSpec(
            "required_columns_not_null",
            asset=asset,
            description=f"Never NULL: {', '.join(contract.required)}.",
        ),
        dg.AssetCheckSpec(
            "row_count", asset=asset, description="The table has rows (row count in metadata)."
        ),
    ]
    if contract.expected:
        specs.append(
            dg.AssetCheckSpec(
                "expected_columns_set",
                asset=asset,
                description=f"Usually set: {', '.join(contract.expected)} "
                f"({contract.why_expected}).",
            )
        )
    return specs


def table_contract_checks(contract: TableContract) -> dg.AssetChecksDefinition:
    """The checks of one table, evaluated together in one read-only transaction."""

    @dg.multi_asset_check(
        specs=_specs(contract),
        name=f"{contract.table}_contract",
        description=f"Data contract of the PostgreSQL table `{contract.table}`.",
    )
    def _check(postgres: PostgresResource) -> Iterator[dg.AssetCheckResult]:
        with postgres.engine().connect() as conn:
            yield from _contract_results(conn, contract)

    return _check


table_checks = [table_contract_checks(contract) for contract in CONTRACTS]
