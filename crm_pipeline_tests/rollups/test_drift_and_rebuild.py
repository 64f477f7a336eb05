"""The drift check (`rollups_match_sources` on analytics_summary) passes on a consistent
database and fails, naming the rollup and key, when a rollup row is off; `rebuild_rollups`
repairs it; migration 0008 fills the rollups from the rows already there."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.db import migrate
from crm_pipeline.db.engine import get_engine
from crm_pipeline.db.rollups import ROLLUPS, rebuild_rollups
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.analytics.checks import rollups_match_sources
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline_tests.analytics.summary_data import seed_marketing
from crm_pipeline_tests.rollups.expected_rollups import assert_consistent


def evaluate(database_url: str, tmp_path) -> dg.AssetCheckEvaluation:
    """Run only the check, as the UI's "Execute checks" does."""
    storage = StorageResource(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    job = dg.Definitions(
        assets=[analytics_summary],
        asset_checks=[rollups_match_sources],
        resources={"postgres": PostgresResource(database_url=database_url), "storage": storage},
    ).resolve_implicit_global_asset_job_def()
    result = job.get_subset(
        asset_selection=set(), asset_check_selection=set(rollups_match_sources.check_keys)
    ).execute_in_process()
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _first(seeded, query: str):
    with seeded.connect() as conn:
        return conn.execute(text(query)).scalar_one()


def test_the_check_passes_on_a_consistent_database(seeded, database_url, tmp_path):
    evaluation = evaluate(database_url, tmp_path)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["rollups_checked"].value == len(ROLLUPS)
    assert evaluation.metadata["differing_keys"].value == {}
    assert all(evaluation.metadata["stored_rows"].value.values())


HAND_EDITS = [
    (
        "UPDATE rollup_orders_daily SET revenue = revenue + 1"
        " WHERE (day, currency, status) = (SELECT day, currency, status FROM rollup_orders_daily"
        " ORDER BY 1, 2, 3 LIMIT 1)",
        "SELECT 'rollup_orders_daily [day=' || min(day) || ' currency=USD status='"
        " || min(status) FROM rollup_orders_daily WHERE day = (SELECT min(day)"
        " FROM rollup_orders_daily)",
    ),
    (
        "DELETE FROM rollup_customer_keys WHERE customer_id = (SELECT max(id) FROM customers)",
        "SELECT 'rollup_customer_keys [customer_id=' || max(id) || ']: stored no row'"
        " FROM customers",
    ),
    (
        "INSERT INTO rollup_attributed_customers (pending_txid, campaign_id, customers)"
        " VALUES ('0', 'ghost', 3)",
        "SELECT 'rollup_attributed_customers [campaign_id=ghost]: stored customers=3;"
        " recomputed no row'",
    ),
    (  # deltas of a transaction that were never folded into the totals
        "INSERT INTO rollup_leads_by_source (pending_txid, source, leads)"
        " VALUES ('42', 'other', 1)",
        "SELECT 'rollup_leads_by_source [source=other]: stored leads=' || (count(*) + 1)"
        " || '; recomputed leads=' || count(*) FROM leads WHERE form_id IS NULL",
    ),
    (
        "UPDATE rollup_ad_insights_daily SET synced_at = synced_at - interval '1 day'"
        " WHERE campaign_id = 'c3'",
        "SELECT 'rollup_ad_insights_daily [date='",
    ),
]


@pytest.mark.parametrize(("edit", "named"), HAND_EDITS)
def test_a_rollup_row_edited_by_hand_fails_the_check_naming_it(
    seeded, database_url, tmp_path, edit, named
):
    expected = _first(seeded, named)
    with seeded.begin() as conn:
        conn.execute(text(edit))
    evaluation = evaluate(database_url, tmp_path)
    assert not evaluation.passed
    table = expected.split(" ")[0]
    assert evaluation.metadata["differing_keys"].value[table] >= 1
    assert expected in evaluation.metadata["differences"].value
    assert table in evaluation.description

    with seeded.begin() as conn:
        counts = rebuild_rollups(conn)
    assert counts[table] == _first(seeded, f"SELECT count(*) FROM {table}")
    assert evaluate(database_url, tmp_path).passed
    assert_consistent(seeded, "rebuilt")


def test_writes_that_bypass_the_triggers_drift_until_rebuilt(
    seeded, people, database_url, tmp_path
):
    with seeded.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text("INSERT INTO orders (customer_id, amount) VALUES (:a, 99.99)"), {"a": people[0]}
        )
        conn.execute(text("UPDATE customers SET tier = 'vip' WHERE id = :b"), {"b": people[1]})
    drifted = evaluate(database_url, tmp_path).metadata["differing_keys"].value
    assert {"rollup_orders_daily", "rollup_tier_revenue", "rollup_customer_keys"} <= set(drifted)

    with seeded.begin() as conn:
        rebuild_rollups(conn)
    assert_consistent(seeded, "rebuilt")


def test_a_rebuild_needs_read_committed(seeded):
    serializable = seeded.connect().execution_options(isolation_level="REPEATABLE READ")
    with serializable as conn, conn.begin(), pytest.raises(ValueError, match="READ COMMITTED"):
        rebuild_rollups(conn)


def test_the_migration_fills_the_rollups_from_existing_rows(fresh_database_url):
    migrate.upgrade(fresh_database_url, "0007")
    engine = get_engine(fresh_database_url)
    seed_demo_crm(engine)
    seed_marketing(engine)
    migrate.upgrade(fresh_database_url)
    filled = assert_consistent(engine, "after upgrade")
    assert all(filled.values())

    migrate.downgrade(fresh_database_url, "0007")  # and back, with data in place
    migrate.upgrade(fresh_database_url)
    assert assert_consistent(engine, "after downgrade and upgrade") == filled
