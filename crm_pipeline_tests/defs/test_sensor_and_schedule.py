import datetime as dt
import json
import math

import dagster as dg
from sqlalchemy import text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.facebook.partitions import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    insights_partitions,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.defs.sync_schedules import daily_attribution_resync, hourly_facebook_sync

SUMMARY = dg.AssetKey("analytics_summary")
MARKETING = dg.AssetKey("marketing_insights_cache")
INDEX = dg.AssetKey("customer_index_cache")
PROFILES = dg.AssetKey("customer_profiles_cache")


def _profile_ids(request):
    return request.run_config["ops"]["customer_profiles_cache"]["config"]["customer_ids"]


def _tick(database_url, cursor=None):
    with dg.build_sensor_context(
        cursor=cursor, resources={"postgres": PostgresResource(database_url=database_url)}
    ) as context:
        result = change_log_sensor(context)
    return result


def test_sensor_requests_exactly_the_assets_a_change_affects(clean_db, database_url):
    first = _tick(database_url)
    assert not first.run_requests  # empty change log: nothing to do
    cursor = first.cursor

    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (email, tier) VALUES ('s@x.io', 'gold') RETURNING id")
        ).scalar_one()
    second = _tick(database_url, cursor)
    assert len(second.run_requests) == 1
    assert set(second.run_requests[0].asset_selection) == {SUMMARY, INDEX, PROFILES}
    assert _profile_ids(second.run_requests[0]) == [cid]

    third = _tick(database_url, second.cursor)  # the same change is not delivered twice
    assert not third.run_requests
    assert third.cursor == second.cursor

    with clean_db.begin() as conn:
        bulk_upsert(
            conn,
            schema.ad_insights_daily,
            [
                {
                    "account_id": "1",
                    "campaign_id": "c",
                    "adset_id": "s",
                    "ad_id": "a",
                    "date": "2026-05-01",
                    "spend": "3.10",
                }
            ],
        )
    fourth = _tick(database_url, third.cursor)
    assert set(fourth.run_requests[0].asset_selection) == {SUMMARY, MARKETING}
    assert json.loads(fourth.cursor)["upto"]
    run_keys = {second.run_requests[0].run_key, fourth.run_requests[0].run_key}
    assert len(run_keys) == 2


def test_sensor_targets_the_customers_a_change_belongs_to(clean_db, database_url):
    with clean_db.begin() as conn:
        a, b, c = (
            conn.execute(
                text("INSERT INTO customers (email) VALUES (:e) RETURNING id"), {"e": e}
            ).scalar_one()
            for e in ("a@x.io", "b@x.io", "c@x.io")
        )
        conn.execute(
            text("INSERT INTO conversations (id, page_id, customer_id) VALUES ('t_1', '2001', :a)"),
            {"a": a},
        )
    cursor = _tick(database_url).cursor

    with clean_db.begin() as conn:  # a message in A's thread; an order moved from B to C
        conn.execute(
            text("INSERT INTO messages (id, conversation_id, text) VALUES ('m_1', 't_1', 'hi')")
        )
        conn.execute(
            text("INSERT INTO orders (external_id, customer_id, amount) VALUES ('o1', :b, 5)"),
            {"b": b},
        )
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE orders SET customer_id = :c"), {"c": c})
    tick = _tick(database_url, cursor)
    assert set(tick.run_requests[0].asset_selection) == {SUMMARY, INDEX, PROFILES}
    assert _profile_ids(tick.run_requests[0]) == sorted([a, b, c])
    # The index lines of B and C changed (their order counts), not A's (a message).
    index_config = tick.run_requests[0].run_config["ops"]["customer_index_cache"]["config"]
    assert index_config == {"customer_ids": sorted([b, c])}

    with clean_db.begin() as conn:  # a lead nobody is linked to: no profile or index line
        conn.execute(text("INSERT INTO leads (id, email) VALUES ('l1', 'n@x.io')"))
    lone = _tick(database_url, tick.cursor)
    assert set(lone.run_requests[0].asset_selection) == {SUMMARY}


def test_sensor_ignores_tables_no_cache_reads(clean_db, database_url):
    cursor = _tick(database_url).cursor
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO sync_state (stream, scope) VALUES ('x', 'y')"))
        conn.execute(text("INSERT INTO conversations (id, page_id) VALUES ('t_1', '2001')"))
    assert not _tick(database_url, cursor).run_requests


RANGE_START, RANGE_END = PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG


def _ranges(requests) -> list[tuple[str, str]]:
    return sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests)


def test_hourly_schedule_syncs_streams_and_two_days_of_insights_per_account():
    when = dt.datetime(2026, 11, 24, 13, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=when)
    requests = list(hourly_facebook_sync(context))
    streams = [r for r in requests if RANGE_START not in r.tags]
    insights = [r for r in requests if RANGE_START in r.tags]
    assert len(streams) == 1 and streams[0].partition_key is None
    assert dg.AssetKey("fb_leads_raw") in streams[0].asset_selection
    # One run over every account's yesterday and today (accounts x days: the cross product).
    assert _ranges(insights) == [("act_1001|2026-11-23", "act_1002|2026-11-24")]
    assert insights_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(*_ranges(insights)[0])
    ) == [f"{a}|2026-11-{d}" for a in ("act_1001", "act_1002") for d in (23, 24)]
    assert all(r.partition_key is None for r in insights)
    assert all(dg.AssetKey("ad_insights_daily") in r.asset_selection for r in insights)
    assert len({r.run_key for r in requests}) == len(requests)
    later = dg.build_schedule_context(scheduled_execution_time=when + dt.timedelta(hours=1))
    assert {r.run_key for r in hourly_facebook_sync(later)}.isdisjoint(
        {r.run_key for r in requests}
    )


def test_daily_resync_covers_the_attribution_lookback():
    when = dt.datetime(2026, 11, 24, 3, 30, tzinfo=dt.UTC)
    requests = list(
        daily_attribution_resync(dg.build_schedule_context(scheduled_execution_time=when))
    )
    # 28 days back, minus the hourly's two: one run over every account's 27 days.
    assert _ranges(requests) == [("act_1001|2026-10-27", "act_1002|2026-11-22")]
    keys = insights_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(*_ranges(requests)[0])
    )
    assert len(keys) == 2 * 27
    assert {k.split("|")[0] for k in keys} == {"act_1001", "act_1002"}


def test_a_scheduled_range_runs_as_one_run_of_the_insights_job(clean_db, database_url, dirs):
    """What the daemon launches for a tick: the job, with the request's range tags.

    Dagster 1.13 has no public name for those tags (crm_pipeline/defs/facebook/partitions.py):
    this run covering both accounts' 27 days, one query each, is what shows Dagster still
    reads ours.
    """
    from graph_emulator import EmulatorData, GraphEmulator

    from crm_pipeline.definitions import defs

    when = dt.datetime(2026, 11, 24, 3, 30, tzinfo=dt.UTC)
    request = next(
        iter(daily_attribution_resync(dg.build_schedule_context(scheduled_execution_time=when)))
    )
    data = EmulatorData()
    with GraphEmulator(data) as server:
        resources = {
            "postgres": PostgresResource(database_url=database_url),
            "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
            "graph_api": GraphApiResource(
                graph_url=server.url, ad_account_ids="act_1001", page_size=100
            ),
        }
        result = defs.resolve_job_def("facebook_insights_job").execute_in_process(
            tags=request.tags, resources=resources, instance=dg.DagsterInstance.ephemeral()
        )
        insights_calls = sum(r.path.endswith("/insights") for r in server.requests)
    assert result.success
    first, last = dt.date(2026, 10, 27), dt.date(2026, 11, 22)
    per_account = [data.insights(a, first, last) for a in ("act_1001", "act_1002")]
    expected = [row for rows in per_account for row in rows]
    # Per account: the ad rows' pages, and one call for Meta's account totals of the 27 days.
    assert insights_calls == sum(math.ceil(len(rows) / 100) + 1 for rows in per_account)
    assert len(result.asset_materializations_for_node("ad_insights_daily")) == 2 * 27
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one() == len(
            expected
        )


def test_a_change_every_customer_file_reads_rebuilds_them_all(clean_db, database_url):
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (email) VALUES ('a@x.io')"))
    cursor = _tick(database_url).cursor
    # Campaign names are shown in every customer's attribution block (the registry's `shared`).
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO ad_accounts (id, name) VALUES ('act_1', 'A')"))
        conn.execute(
            text("INSERT INTO campaigns (id, account_id, name) VALUES ('c1', 'act_1', 'Spring')")
        )
    tick = _tick(database_url, cursor)
    assert set(tick.run_requests[0].asset_selection) == {SUMMARY, MARKETING, PROFILES}
    assert _profile_ids(tick.run_requests[0]) is None  # every file

    with clean_db.begin() as conn:  # a TRUNCATE names no customer: every file too
        conn.execute(text("TRUNCATE orders"))
    tick = _tick(database_url, tick.cursor)
    assert PROFILES in set(tick.run_requests[0].asset_selection)
    assert _profile_ids(tick.run_requests[0]) is None
