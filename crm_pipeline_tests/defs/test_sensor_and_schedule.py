import datetime as dt
import json

import dagster as dg
from sqlalchemy import text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.facebook.schedules import daily_attribution_resync, hourly_facebook_sync
from crm_pipeline.defs.resources import PostgresResource

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

    with clean_db.begin() as conn:  # a lead nobody is linked to: no profile to rebuild
        conn.execute(text("INSERT INTO leads (id, email) VALUES ('l1', 'n@x.io')"))
    lone = _tick(database_url, tick.cursor)
    assert set(lone.run_requests[0].asset_selection) == {SUMMARY, INDEX}


def test_sensor_ignores_tables_no_cache_reads(clean_db, database_url):
    cursor = _tick(database_url).cursor
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO sync_state (stream, scope) VALUES ('x', 'y')"))
        conn.execute(text("INSERT INTO conversations (id, page_id) VALUES ('t_1', '2001')"))
    assert not _tick(database_url, cursor).run_requests


def test_hourly_schedule_syncs_streams_and_two_days_of_insights_per_account():
    when = dt.datetime(2026, 11, 24, 13, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=when)
    requests = list(hourly_facebook_sync(context))
    streams = [r for r in requests if r.partition_key is None]
    insights = [r for r in requests if r.partition_key is not None]
    assert len(streams) == 1
    assert dg.AssetKey("fb_leads_raw") in streams[0].asset_selection
    assert sorted(str(r.partition_key) for r in insights) == [
        "act_1001|2026-11-23",
        "act_1001|2026-11-24",
        "act_1002|2026-11-23",
        "act_1002|2026-11-24",
    ]
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
    days = sorted({r.partition_key.keys_by_dimension["date"] for r in requests})
    assert days[0] == "2026-10-27" and days[-1] == "2026-11-22"  # 28 days back, minus the hourly's
    assert len(requests) == 27 * 2
