"""The Facebook sync end to end through Dagster: emulator -> Parquet -> PostgreSQL, exactly."""

import datetime as dt
import math

import dagster as dg
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline import orchestrate
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    ACCOUNTS,
    DAYS,
    FB_TABLES,
    resources_for,
    snapshot,
    sync,
)
from crm_pipeline_tests.emulator_snapshots import all_leads, conversations_with_messages


def test_sync_fills_every_table_exactly(clean_db, database_url, dirs):
    data = EmulatorData()
    with clean_db.begin() as conn:  # a known Messenger user: the sync links the conversation
        psid = conversations_with_messages(data)[0]["psid"]
        conn.execute(
            text("INSERT INTO customers (email, fb_psid) VALUES ('m@x.io', :p)"), {"p": psid}
        )
    with GraphEmulator(data) as server:
        report = sync(database_url, server, dirs)
    with clean_db.connect() as conn:
        count = lambda t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: E731
        accounts = conn.execute(
            text("SELECT id, name, currency, timezone_name FROM ad_accounts ORDER BY id")
        ).all()
        assert [tuple(a) for a in accounts] == [
            (a["id"], a["name"], a["currency"], a["timezone_name"])
            for a in map(data.ad_account, ACCOUNTS)
        ]
        assert count("campaigns") == sum(len(data.campaigns(a)) for a in ACCOUNTS)
        assert count("adsets") == sum(len(data.adsets(a)) for a in ACCOUNTS)
        assert count("ads") == sum(len(data.ads(a)) for a in ACCOUNTS)
        days = [dt.date.fromisoformat(d) for d in DAYS]
        expected = [r for a in ACCOUNTS for r in data.insights(a, days[0], days[-1])]
        assert count("ad_insights_daily") == len(expected) == report.insight_rows
        spend = conn.execute(text("SELECT sum(spend)::text FROM ad_insights_daily")).scalar_one()
        assert spend == f"{sum(float(r['spend']) for r in expected):.4f}"
        assert count("leads") == len(all_leads(data))
        assert (
            conn.execute(
                text("SELECT count(*) FROM leads WHERE email IS NULL OR field_data IS NULL")
            ).scalar_one()
            == 0
        )
        assert count("conversations") == len(conversations_with_messages(data))
        assert count("messages") == sum(
            len(c["messages"]) for c in conversations_with_messages(data)
        )
        linked = conn.execute(
            text("SELECT count(*) FROM conversations WHERE customer_id IS NOT NULL")
        ).scalar_one()
        assert linked == 1


def test_resync_is_idempotent_and_quiet(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs)
        before = snapshot(clean_db)
        with clean_db.connect() as conn:
            changes = conn.execute(text("SELECT count(*) FROM change_log")).scalar_one()
        sync(database_url, server, dirs)
    assert snapshot(clean_db) == before
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() == changes


def test_faults_change_nothing_but_the_path(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs)
    clean = snapshot(clean_db)

    with clean_db.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(FB_TABLES)}, sync_state CASCADE"))
    faults = FaultPlan()
    faults.add(
        Fault(kind="throttle", code=17, subcode=2446079, count=2, path="/insights"),
        Fault(kind="throttle", code=80000, count=1, path="/campaigns"),
        Fault(kind="transient", count=3),
        Fault(kind="reduce_data", count=2, path="/insights"),
        Fault(kind="throttle", code=613, count=1, path="/leads"),
        Fault(kind="transient", count=1, path="/conversations"),
    )
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        sync(database_url, server, dirs)
        assert not faults.remaining, "every injected fault was hit"
    assert snapshot(clean_db) == clean


def test_incremental_streams_fetch_only_what_changed(clean_db, database_url, dirs):
    data = EmulatorData()
    with GraphEmulator(data) as server:
        sync(database_url, server, dirs)
        later = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
        form = data.lead_forms()[0]["id"]
        new_lead = data.add_lead(
            form, created_time=later, email="new@x.io", full_name="New Person", phone="+1555"
        )
        conv = conversations_with_messages(data)[0]
        new_msg = data.add_message(
            conv["id"], psid=conv["psid"], text="hello again", created_time=later
        )
        campaign = data.campaigns("act_1001")[0]["id"]
        data.touch(campaign, later)
        server.reset_requests()
        report = orchestrate.sync_facebook(
            DAYS[-1:],
            resources=resources_for(database_url, server.url, dirs),
            instance=dg.DagsterInstance.ephemeral(),
            database_url=database_url,
            refresh_caches=False,
        )
        paths = [r.path for r in server.requests]
    with clean_db.connect() as conn:
        assert (
            conn.execute(
                text("SELECT email FROM leads WHERE id = :i"), {"i": new_lead["id"]}
            ).scalar_one()
            == "new@x.io"
        )
        assert (
            conn.execute(
                text("SELECT text FROM messages WHERE id = :i"), {"i": new_msg["id"]}
            ).scalar_one()
            == "hello again"
        )
        state = conn.execute(
            text("SELECT state->>'created_time' FROM sync_state WHERE stream='leads' AND scope=:f"),
            {"f": form},
        ).scalar_one()
        assert state.startswith("2026-11-23T09:00:00")
    # Conversations are read newest first and paging stops at the watermark: one page.
    assert sum("/conversations" in p for p in paths) == 1
    assert report.api_calls < 30


def test_api_calls_stay_within_ten_percent_of_the_minimum(clean_db, database_url, dirs):
    data = EmulatorData()
    with GraphEmulator(data) as server:
        report = sync(database_url, server, dirs)
        insights_calls = sum("/insights" in r.path for r in server.requests)
    page = 10
    since, until = dt.date.fromisoformat(DAYS[0]), dt.date.fromisoformat(DAYS[-1])
    # One query per account for the whole range: its pages are the minimum, plus one call per
    # account for Meta's account totals of the range (a row per day: one page).
    minimum = sum(max(1, math.ceil(len(data.insights(a, since, until)) / page)) for a in ACCOUNTS)
    minimum += len(ACCOUNTS)
    assert minimum <= insights_calls <= math.ceil(minimum * 1.1)
    assert report.api_calls >= insights_calls
