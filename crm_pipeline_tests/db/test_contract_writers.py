"""A writer that follows the documented table contracts always succeeds (invariant 10 in
docs/architecture.md).

The writer here is another application: `psql`, no ORM, no API, naming exactly the contract's
columns of each table (CONTRACT_COLUMNS, shared with the migration test) and nothing else. Its
rows must then reach the cache files through the change log, like any other write.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.cache.customer_index import read_customers
from crm_pipeline.cache.stores import LocalFolder
from crm_pipeline.cachefile import read_json
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline_tests.db.test_migrations import CONTRACT_COLUMNS
from crm_pipeline_tests.defs.test_sensor_and_schedule import _tick as change_log_tick

CACHE_ASSETS = [
    customer_profiles_cache,
    customer_index_cache,
    marketing_insights_cache,
    analytics_summary,
]
EMAIL = "contract.writer@example.com"
PSID = "psid-contract-1"
TODAY = dt.datetime.now(dt.UTC).date().isoformat()

# What the contract writer sends, table by table in dependency order: one SQL value per contract
# column. `DEFAULT` is how a writer leaves a generated id to the database while still naming
# only contract columns; `:customer_id` is the new customer's id (psql's `\gset`).
WRITES: dict[str, dict[str, str]] = {
    "customers": {
        "id": "DEFAULT",
        "name": "'Contract Writer'",
        "email": f"'{EMAIL}'",
        "phone": "'+15550009999'",
        "tier": "'gold'",
        "fb_psid": f"'{PSID}'",
        "created_at": "now()",
        "updated_at": "now()",
    },
    "orders": {
        "id": "DEFAULT",
        "customer_id": ":customer_id",
        "amount": "42.50",
        "currency": "'EUR'",
        "status": "'paid'",
        "created_at": "now()",
    },
    "leads": {
        "id": "'contract-lead-1'",
        "form_id": "'contract-form'",
        "ad_id": "'contract-ad'",
        "created_time": "now()",
        "email": f"'{EMAIL}'",
        "phone": "'+15550009999'",
        "full_name": "'Contract Writer'",
        "field_data": f"""'[{{"name": "email", "values": ["{EMAIL}"]}}]'""",
        "customer_id": ":customer_id",
    },
    "conversations": {
        "id": "'t_contract_1'",
        "page_id": "'2001'",
        "customer_id": ":customer_id",
        "updated_time": "now()",
    },
    "messages": {
        "id": "'m_contract_1'",
        "conversation_id": "'t_contract_1'",
        "from_id": f"'{PSID}'",
        "text": "'hello from psql'",
        "created_time": "now()",
    },
    "ad_insights_daily": {
        "account_id": "'contract-account'",
        "campaign_id": "'contract-campaign'",
        "adset_id": "'contract-adset'",
        "ad_id": "'contract-ad'",
        "date": f"'{TODAY}'",
        "impressions": "1000",
        "clicks": "25",
        "spend": "12.3400",
        "reach": "800",
    },
}


def _script() -> str:
    """The writer's psql script: one INSERT per table naming exactly its contract columns."""
    lines = []
    for table, values in WRITES.items():
        columns = ", ".join(values)
        statement = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values.values())})"
        if table == "customers":
            statement += " RETURNING id AS customer_id \\gset"
        else:
            statement += ";"
        lines.append(statement)
    return "\n".join(lines) + "\n"


def _psql(database_url: str, script: str) -> subprocess.CompletedProcess:
    psql = shutil.which("psql") or "/usr/bin/psql"
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(database_url)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_writer_names_exactly_the_contract_columns():
    """Keeps the writer honest: a column added to (or dropped from) a contract must be here."""
    data_tables = {table for table, columns in CONTRACT_COLUMNS.items() if columns}
    assert set(WRITES) == data_tables
    for table, values in WRITES.items():
        assert set(values) == CONTRACT_COLUMNS[table], table


def test_every_column_a_writer_must_fill_is_in_the_contract(engine):
    """No migration may add a NOT NULL column without a default outside the contract."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ANY(:tables)"
                "   AND is_nullable = 'NO' AND column_default IS NULL"
                "   AND is_identity = 'NO' AND is_generated = 'NEVER'"
            ),
            {"tables": list(WRITES)},
        ).all()
    required = {(r.table_name, r.column_name) for r in rows}
    outside = {(t, c) for t, c in required if c not in CONTRACT_COLUMNS[t]}
    assert not outside, f"a contract writer cannot fill {sorted(outside)}"


def test_a_psql_writer_of_the_contract_columns_reaches_the_cache(clean_db, database_url, dirs):
    resources = {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }
    cursor = change_log_tick(database_url).cursor

    written = _psql(database_url, _script())
    assert written.returncode == 0, f"the contract writer failed: {written.stderr.strip()}"
    with clean_db.connect() as conn:
        cid = conn.execute(
            text("SELECT id FROM customers WHERE email = :e"), {"e": EMAIL}
        ).scalar_one()
        order_id = conn.execute(
            text("SELECT id FROM orders WHERE customer_id = :c"), {"c": cid}
        ).scalar_one()

    tick = change_log_tick(database_url, cursor)
    (request,) = tick.run_requests
    result = dg.materialize(
        CACHE_ASSETS,
        selection=request.asset_selection,
        resources=resources,
        run_config=request.run_config,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success

    folder = dirs["cache"] / "customers"
    profile = read_json(folder / f"{cid}.json")
    assert profile["customer"]["email"] == EMAIL
    assert [(o["id"], o["external_id"], o["amount"]) for o in profile["orders"]] == [
        (order_id, None, pytest.approx(42.5))
    ]
    assert [lead["id"] for lead in profile["leads"]] == ["contract-lead-1"]
    (conversation,) = profile["conversations"]
    assert conversation["id"] == "t_contract_1"
    assert [m["text"] for m in conversation["messages"]] == ["hello from psql"]
    assert [c["id"] for c in read_customers(LocalFolder(dirs["cache"]))] == [cid]
    insights = read_json(dirs["cache"] / "marketing" / "insights.json")
    assert [c["campaign_id"] for c in insights["by_campaign"]] == ["contract-campaign"]
    # Insight columns outside the contract took their defaults: no purchases Meta reported.
    summary = read_json(dirs["cache"] / "analytics" / "summary.json")
    [campaign] = summary["roas"]["by_campaign"]
    assert campaign["campaign_id"] == "contract-campaign"
    assert (campaign["meta_purchases"], campaign["meta_purchase_value"]) == (0, 0)
    assert campaign["meta_roas"] == 0  # 0 purchase value over 12.34 of spend
