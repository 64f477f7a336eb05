"""Asset checks: table contracts, cache lag behind the change log, summary.json's schema.

Each check is shown passing on good data and failing on the violation it exists for.
"""

import dagster as dg
import orjson
import pytest
from sqlalchemy import text

from crm_pipeline.cache.summary import SUMMARY_FILE
from crm_pipeline.db.schema import metadata
from crm_pipeline.definitions import defs
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.cache.checks import cache_lag_checks, summary_matches_schema
from crm_pipeline.defs.crm.assets import ad_insights_daily, customers, leads, orders
from crm_pipeline.defs.crm.checks import CONTRACTS, table_checks
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm

CACHE_ASSETS = [
    marketing_insights_cache,
    customer_index_cache,
    customer_profiles_cache,
    analytics_summary,
]


@pytest.fixture
def resources(database_url, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }


def evaluate(assets, checks, resources) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Run only the given checks (not their assets), as the UI's "Execute checks" does."""
    job = dg.Definitions(
        assets=assets, asset_checks=checks, resources=resources
    ).resolve_implicit_global_asset_job_def()
    keys = {key for check in checks for key in check.check_keys}
    result = job.get_subset(asset_selection=set(), asset_check_selection=keys).execute_in_process()
    assert result.success
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def _checks_of(table: str) -> dg.AssetChecksDefinition:
    return next(
        c for c in table_checks if dg.AssetKey(table) in {k.asset_key for k in c.check_keys}
    )


def test_every_contract_names_a_real_table_and_asset():
    graph = defs.resolve_asset_graph()
    for contract in CONTRACTS:
        assert contract.table in metadata.tables
        assert dg.AssetKey(contract.table) in graph.get_all_asset_keys()
    assert {c.table for c in CONTRACTS} >= {"ad_insights_daily", "customers", "orders", "leads"}


def test_table_contracts_pass_on_good_data_and_fail_on_each_violation(clean_db, resources):
    seed_demo_crm(clean_db)
    checks = [_checks_of("customers"), _checks_of("orders"), _checks_of("leads")]
    checks.append(_checks_of("ad_insights_daily"))
    assets = [customers, orders, leads, ad_insights_daily]
    good = evaluate(assets, checks, resources)
    assert all(good[("customers", n)].passed for n in ("natural_key_unique", "row_count"))
    assert good[("orders", "required_columns_not_null")].passed
    # Empty tables are a warning, not an error, and say how many rows there are.
    empty = good[("ad_insights_daily", "row_count")]
    assert not empty.passed and empty.severity == dg.AssetCheckSeverity.WARN
    assert empty.metadata["row_count"].value == 0

    with clean_db.begin() as conn:
        email = conn.execute(text("SELECT email FROM customers ORDER BY id LIMIT 1")).scalar_one()
        # Another app writes the same person with different case and a trailing space.
        conn.execute(
            text("INSERT INTO customers (email, tier) VALUES (:e, 'gold')"),
            {"e": email.upper() + " "},
        )
        conn.execute(text("INSERT INTO leads (id, created_time) VALUES ('L-no-form', now())"))
    bad = evaluate(assets, checks, resources)
    duplicate = bad[("customers", "natural_key_unique")]
    assert not duplicate.passed and duplicate.severity == dg.AssetCheckSeverity.ERROR
    assert duplicate.metadata["duplicate_keys"].value == 1
    assert duplicate.metadata["sample"].value == [email.lower()]
    missing = bad[("leads", "required_columns_not_null")]
    assert not missing.passed
    assert missing.metadata["null_rows"].value["form_id"] == 1
    # The unmatched lead has no customer: expected, so only a warning.
    unlinked = bad[("leads", "expected_columns_set")]
    assert not unlinked.passed and unlinked.severity == dg.AssetCheckSeverity.WARN


def _backdate_changes(engine, minutes: int = 10) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE change_log SET changed_at = now() - make_interval(mins => :m)"),
            {"m": minutes},
        )


def test_cache_lag_check_flags_files_behind_the_change_log(clean_db, resources):
    seed_demo_crm(clean_db)
    result = dg.materialize([*CACHE_ASSETS, cache_lag_checks], resources=resources)
    lag = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in lag.values()), lag
    assert len(lag) == 4

    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (email, tier) VALUES ('late@x.io', 'gold')"))
    # Seconds old: within the grace period the sensor needs, not a fault yet.
    fresh = evaluate(CACHE_ASSETS, [cache_lag_checks], resources)
    assert all(e.passed for e in fresh.values())

    _backdate_changes(clean_db)
    stale = evaluate(CACHE_ASSETS, [cache_lag_checks], resources)
    for asset in ("customer_index_cache", "analytics_summary", "customer_profiles_cache"):
        assert not stale[(asset, "not_behind_change_log")].passed, asset
    # Insights do not depend on customers.
    assert stale[("marketing_insights_cache", "not_behind_change_log")].passed
    assert (
        stale[("customer_profiles_cache", "not_behind_change_log")]
        .metadata["customers_behind"]
        .value
        == 1
    )

    dg.materialize(CACHE_ASSETS, resources=resources)
    caught_up = evaluate(CACHE_ASSETS, [cache_lag_checks], resources)
    assert all(e.passed for e in caught_up.values())


def test_summary_schema_check_reads_the_file_on_disk(clean_db, resources, dirs):
    assert dg.materialize([analytics_summary], resources=resources).success
    ok = evaluate([analytics_summary], [summary_matches_schema], resources)
    assert ok[("analytics_summary", "summary_matches_schema")].passed

    path = dirs["cache"] / SUMMARY_FILE
    document = orjson.loads(path.read_bytes())
    del document["revenue"]
    path.write_bytes(orjson.dumps(document))
    broken = evaluate([analytics_summary], [summary_matches_schema], resources)
    failed = broken[("analytics_summary", "summary_matches_schema")]
    assert not failed.passed
    assert "revenue" in failed.metadata["error"].value


def test_freshness_policies_cover_every_synced_and_cached_asset():
    graph = defs.resolve_asset_graph()
    unmanaged = {"customers", "orders", "webhook_leads", "local_db_snapshot"}
    for key in graph.get_all_asset_keys():
        policy = graph.get(key).freshness_policy
        if key.to_user_string() in unmanaged:
            assert policy is None, key
        else:
            assert policy is not None, f"{key.to_user_string()} has no freshness policy"
