"""The Facebook sync end to end through Dagster: emulator -> Parquet -> PostgreSQL, exactly."""

import datetime as dt
import math

import dagster as dg
import orjson
import pytest
from sqlalchemy import text

from crm_pipeline import orchestrate
from crm_pipeline.db.schema import metadata
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook.emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

DAYS = ["2026-11-18", "2026-11-19"]
ACCOUNTS = ("act_1001", "act_1002")
FB_TABLES = (
    "campaigns",
    "adsets",
    "ads",
    "ad_insights_daily",
    "leads",
    "conversations",
    "messages",
)
# Columns that record when we synced, not what Meta said.
VOLATILE = {"synced_at"}


@pytest.fixture(autouse=True)
def fast_governor(monkeypatch):
    """Real governor rules, with waits scaled down so the suite stays quick."""
    monkeypatch.setenv("CRM_GRAPH_BACKOFF_BASE_SECONDS", "0.01")
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "30")


def _resources(database_url, url, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(
            graph_url=url, ad_account_ids=",".join(ACCOUNTS), page_id="2001", page_size=10
        ),
    }


def _sync(database_url, server, dirs, days=DAYS):
    return orchestrate.sync_facebook(
        days,
        resources=_resources(database_url, server.url, dirs),
        instance=dg.DagsterInstance.ephemeral(),
        database_url=database_url,
        refresh_caches=False,
    )


def _snapshot(engine) -> dict[str, list]:
    state = {}
    with engine.connect() as conn:
        for name in FB_TABLES:
            table = metadata.tables[name]
            cols = [c for c in table.c if c.name not in VOLATILE]
            order = [c for c in table.primary_key.columns]
            state[name] = conn.execute(
                table.select().with_only_columns(*cols).order_by(*order)
            ).all()
    return state


def test_sync_fills_every_table_exactly(clean_db, database_url, dirs):
    data = EmulatorData()
    with clean_db.begin() as conn:  # a known Messenger user: the sync links the conversation
        psid = data.conversations_for_tests()[0]["psid"]
        conn.execute(
            text("INSERT INTO customers (email, fb_psid) VALUES ('m@x.io', :p)"), {"p": psid}
        )
    with GraphEmulator(data) as server:
        report = _sync(database_url, server, dirs)
    with clean_db.connect() as conn:
        count = lambda t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: E731
        assert count("campaigns") == sum(len(data.campaigns(a)) for a in ACCOUNTS)
        assert count("adsets") == sum(len(data.adsets(a)) for a in ACCOUNTS)
        assert count("ads") == sum(len(data.ads(a)) for a in ACCOUNTS)
        days = [dt.date.fromisoformat(d) for d in DAYS]
        expected = [r for a in ACCOUNTS for r in data.insights(a, days[0], days[-1])]
        assert count("ad_insights_daily") == len(expected) == report.insight_rows
        spend = conn.execute(text("SELECT sum(spend)::text FROM ad_insights_daily")).scalar_one()
        assert spend == f"{sum(float(r['spend']) for r in expected):.4f}"
        assert count("leads") == len(data.all_leads_for_tests())
        assert (
            conn.execute(
                text("SELECT count(*) FROM leads WHERE email IS NULL OR field_data IS NULL")
            ).scalar_one()
            == 0
        )
        assert count("conversations") == len(data.conversations_for_tests())
        assert count("messages") == sum(len(c["messages"]) for c in data.conversations_for_tests())
        linked = conn.execute(
            text("SELECT count(*) FROM conversations WHERE customer_id IS NOT NULL")
        ).scalar_one()
        assert linked == 1


def test_resync_is_idempotent_and_quiet(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        _sync(database_url, server, dirs)
        before = _snapshot(clean_db)
        with clean_db.connect() as conn:
            changes = conn.execute(text("SELECT count(*) FROM change_log")).scalar_one()
        _sync(database_url, server, dirs)
    assert _snapshot(clean_db) == before
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() == changes


def test_faults_change_nothing_but_the_path(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        _sync(database_url, server, dirs)
    clean = _snapshot(clean_db)

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
        _sync(database_url, server, dirs)
        assert not faults.remaining, "every injected fault was hit"
    assert _snapshot(clean_db) == clean


def test_incremental_streams_fetch_only_what_changed(clean_db, database_url, dirs):
    data = EmulatorData()
    with GraphEmulator(data) as server:
        _sync(database_url, server, dirs)
        later = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
        form = data.lead_forms_for_tests()[0]["id"]
        new_lead = data.add_lead(
            form, created_time=later, email="new@x.io", full_name="New Person", phone="+1555"
        )
        conv = data.conversations_for_tests()[0]
        new_msg = data.add_message(
            conv["id"], psid=conv["psid"], text="hello again", created_time=later
        )
        campaign = data.campaigns("act_1001")[0]["id"]
        data.touch(campaign, later)
        server.reset_requests()
        report = orchestrate.sync_facebook(
            DAYS[-1:],
            resources=_resources(database_url, server.url, dirs),
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
        report = _sync(database_url, server, dirs)
        insights_calls = sum("/insights" in r.path for r in server.requests)
    page = 10
    minimum = sum(
        max(
            1,
            math.ceil(
                len(data.insights(a, dt.date.fromisoformat(d), dt.date.fromisoformat(d))) / page
            ),
        )
        for a in ACCOUNTS
        for d in DAYS
    )
    assert minimum <= insights_calls <= math.ceil(minimum * 1.1)
    assert report.api_calls >= insights_calls


def _insight_windows(server) -> list[tuple[str, str]]:
    """(account, day) of every insights request the server saw."""
    windows = []
    for r in server.requests:
        if r.path.endswith("/insights"):
            account = r.path.split("/")[-2]
            windows.append((account, orjson.loads(r.params["time_range"])["since"]))
    return windows


def test_resume_from_checkpoint_after_the_wait_budget_runs_out(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "1")
    faults = FaultPlan()
    # Meta asks for 5 minutes: past the budget, so the run ends with a clear message.
    faults.add(
        Fault(kind="throttle", code=80000, eta_minutes=5, count=50, path="act_1002/insights")
    )
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        with pytest.raises(orchestrate.RunFailed, match="(?i)wait|budget|rate"):
            _sync(database_url, server, dirs)
        first = set(_insight_windows(server))
        faults.remaining.clear()
        server.reset_requests()
        report = _sync(database_url, server, dirs)
        second = set(_insight_windows(server))
    assert ("act_1001", DAYS[0]) in first  # finished before the throttle ended the run
    assert report.resumed == 1
    assert ("act_1001", DAYS[0]) not in second, "a finished account-day was fetched again"
    assert {("act_1002", DAYS[0]), ("act_1001", DAYS[1]), ("act_1002", DAYS[1])} <= second
    with clean_db.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM sync_state WHERE stream = 'cli_insights_sync'")
            ).scalar_one()
            == 0
        )
        rows = conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one()
    assert rows == sum(
        len(EmulatorData().insights(a, dt.date.fromisoformat(d), dt.date.fromisoformat(d)))
        for a in ACCOUNTS
        for d in DAYS
    )


class _MalformedData(EmulatorData):
    def insights(self, account_id, since, until):
        rows = super().insights(account_id, since, until)
        if rows:
            rows[0] = {**rows[0], "spend": "12,50"}  # a decimal comma: not a number
        return rows


def test_malformed_rows_are_quarantined_and_the_check_fails(clean_db, database_url, dirs):
    from crm_pipeline.defs.crm.assets import ad_insights_daily
    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import insights_partition_key

    key = insights_partition_key("act_1001", DAYS[0])
    with GraphEmulator(EmulatorData()) as server:
        good = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=_resources(database_url, server.url, dirs),
        )
    assert good.success
    before = _snapshot(clean_db)["ad_insights_daily"]
    with GraphEmulator(_MalformedData()) as server:
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=_resources(database_url, server.url, dirs),
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [False]
    meta = result.asset_materializations_for_node("fb_ad_insights_raw")[0].metadata
    assert meta["quarantined"].value == 1
    # The good row already stored for the malformed ad is kept, not deleted or corrupted.
    assert _snapshot(clean_db)["ad_insights_daily"] == before


def test_async_report_runs_give_the_same_rows_even_when_jobs_fail(clean_db, database_url, dirs):
    from crm_pipeline.defs.crm.assets import ad_insights_daily
    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import insights_partition_key

    key = insights_partition_key("act_1001", DAYS[0])
    with GraphEmulator(EmulatorData()) as server:
        assert dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=_resources(database_url, server.url, dirs),
        ).success
    synchronous = _snapshot(clean_db)["ad_insights_daily"]
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE ad_insights_daily"))

    faults = FaultPlan()
    faults.add(Fault(kind="async_fail", count=3))  # retried twice, then split by campaign
    resources = _resources(database_url, None, dirs)
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url,
            ad_account_ids="act_1001",
            page_id="2001",
            insights_mode="async",
        )
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily], partition_key=key, resources=resources
        )
        posts = [r for r in server.requests if r.method == "POST"]
    assert result.success
    assert len(posts) > 3, "the failing job was retried and then split"
    assert _snapshot(clean_db)["ad_insights_daily"] == synchronous
    meta = result.asset_materializations_for_node("fb_ad_insights_raw")[0].metadata
    assert meta["rows"].value == len(synchronous)
    assert {"api_calls", "pages", "retries", "throttle_waits"} <= meta.keys()
