"""The Facebook sync end to end through Dagster: emulator -> Parquet -> PostgreSQL, exactly."""

import datetime as dt
import math

import dagster as dg
import orjson
import pyarrow.parquet as pq
import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline import orchestrate
from crm_pipeline.db.schema import metadata
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource

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


def _sync(database_url, server, dirs, days=DAYS, instance=None):
    return orchestrate.sync_facebook(
        days,
        resources=_resources(database_url, server.url, dirs),
        instance=instance or dg.DagsterInstance.ephemeral(),
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
    since, until = dt.date.fromisoformat(DAYS[0]), dt.date.fromisoformat(DAYS[-1])
    # One query per account for the whole range: its pages are the minimum.
    minimum = sum(max(1, math.ceil(len(data.insights(a, since, until)) / page)) for a in ACCOUNTS)
    assert minimum <= insights_calls <= math.ceil(minimum * 1.1)
    assert report.api_calls >= insights_calls


def _insight_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The partitioned runs (the streams run has no partition): the insights runs."""
    return [
        r
        for r in instance.get_runs()
        if {"dagster/partition", "dagster/asset_partition_range_start"} & set(r.tags)
    ]


def test_a_month_of_one_account_is_one_run_and_the_minimum_of_calls(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 30))
    data = EmulatorData()
    instance = dg.DagsterInstance.ephemeral()
    with GraphEmulator(data) as server:
        report = _sync(database_url, server, dirs, days, instance)
        windows = _insight_windows(server)
    expected = data.insights("act_1001", dt.date(2026, 10, 1), dt.date(2026, 10, 30))
    runs = _insight_runs(instance)
    assert len(runs) == 1, "the 30 account-days ran as one Dagster run"
    assert len(instance.get_runs()) == 2  # and the streams run
    assert runs[0].tags["dagster/asset_partition_range_start"] == "act_1001|2026-10-01"
    assert runs[0].tags["dagster/asset_partition_range_end"] == "act_1001|2026-10-30"
    assert len(windows) == math.ceil(len(expected) / 10)  # one query, paged: no extra call
    assert set(windows) == {("act_1001", days[0], days[-1])}
    assert report.insight_rows == report.inserted == len(expected)
    assert report.resumed == 0
    # Every account-day is its own materialisation with its own counts.
    mats = instance.fetch_materializations(dg.AssetKey("ad_insights_daily"), limit=100).records
    by_day = {
        r.partition_key.split("|")[1]: r.asset_materialization.metadata["rows"].value for r in mats
    }
    assert by_day == {d: len(expected) // len(days) for d in days}
    with clean_db.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*), count(DISTINCT date) FROM ad_insights_daily")
        ).one()
    assert tuple(stored) == (len(expected), len(days))


def test_a_resumed_range_skips_checkpointed_days(clean_db, database_url, dirs, monkeypatch):
    from crm_pipeline.db.sync_state import put_state

    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 10))
    scope = f"{days[0]}..{days[-1]}|act_1001"
    finished = days[3:6]  # what an earlier, interrupted run of the same command had done
    with clean_db.begin() as conn:
        put_state(
            conn,
            orchestrate.CHECKPOINT_STREAM,
            scope,
            {"done": [f"act_1001|{d}" for d in finished]},
        )
    instance = dg.DagsterInstance.ephemeral()
    with GraphEmulator(EmulatorData()) as server:
        report = _sync(database_url, server, dirs, days, instance)
        windows = _insight_windows(server)
    assert report.resumed == 3
    # The days left form two stretches: one run and one query each.
    assert set(windows) == {("act_1001", days[0], days[2]), ("act_1001", days[6], days[9])}
    assert len(_insight_runs(instance)) == 2
    with clean_db.connect() as conn:
        stored = {
            d.isoformat()
            for (d,) in conn.execute(text("SELECT DISTINCT date FROM ad_insights_daily"))
        }
        left = conn.execute(
            text("SELECT count(*) FROM sync_state WHERE stream = 'cli_insights_sync'")
        ).scalar_one()
    assert stored == set(days) - set(finished)
    assert left == 0


class _QuietDay(EmulatorData):
    """Meta reports nothing for one day (the ads were paused, or the rows were revised away)."""

    quiet = dt.date(2026, 10, 2)

    def insights(self, account_id, since, until):
        return [
            r
            for r in super().insights(account_id, since, until)
            if r["date_start"] != self.quiet.isoformat()
        ]


def test_a_day_meta_no_longer_reports_is_emptied_in_a_range(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
    days = orchestrate.days_between(dt.date(2026, 10, 1), dt.date(2026, 10, 3))
    with GraphEmulator(EmulatorData()) as server:
        _sync(database_url, server, dirs, days)
    with GraphEmulator(_QuietDay()) as server:
        report = _sync(database_url, server, dirs, days)
    with clean_db.connect() as conn:
        per_day = dict(
            conn.execute(
                text("SELECT date::text, count(*) FROM ad_insights_daily GROUP BY date")
            ).all()
        )
    ads = len(EmulatorData().ads("act_1001"))
    assert per_day == {days[0]: ads, days[2]: ads}
    assert report.insight_rows == 2 * ads
    quiet = dirs["data"] / "raw" / "fb_ad_insights" / f"date=account=act_1001/date={days[1]}"
    assert pq.read_table(quiet / "data.parquet").num_rows == 0


def _insight_windows(server) -> list[tuple[str, str, str]]:
    """(account, since, until) of every insights request the server saw."""
    windows = []
    for r in server.requests:
        if r.path.endswith("/insights"):
            account = r.path.split("/")[-2]
            time_range = orjson.loads(r.params["time_range"])
            windows.append((account, time_range["since"], time_range["until"]))
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
        with clean_db.connect() as conn:
            checkpoint = conn.execute(
                text("SELECT state FROM sync_state WHERE stream = 'cli_insights_sync'")
            ).scalar_one()
        faults.remaining.clear()
        server.reset_requests()
        report = _sync(database_url, server, dirs)
        second = _insight_windows(server)
    # act_1001's days finished (one query for both) before the throttle ended act_1002's run;
    # the failed run's days are not marked done.
    assert ("act_1001", DAYS[0], DAYS[-1]) in first
    assert checkpoint == {"done": [f"act_1001|{d}" for d in DAYS]}
    assert report.resumed == 2
    assert set(second) == {("act_1002", DAYS[0], DAYS[-1])}, "a finished day was fetched again"
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


def test_a_single_partition_runs_exactly_as_before(clean_db, database_url, dirs):
    from crm_pipeline.defs.crm.assets import ad_insights_daily
    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import insights_partition_key

    data = EmulatorData()
    key = insights_partition_key("act_1002", DAYS[0])
    with GraphEmulator(data) as server:
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=_resources(database_url, server.url, dirs),
        )
        windows = _insight_windows(server)
    assert result.success
    assert result.dagster_run.tags["dagster/partition"] == "act_1002|2026-11-18"
    day = dt.date.fromisoformat(DAYS[0])
    expected = data.insights("act_1002", day, day)
    assert windows == [("act_1002", DAYS[0], DAYS[0])] * math.ceil(len(expected) / 10)
    [raw] = result.asset_materializations_for_node("fb_ad_insights_raw")
    [db] = result.asset_materializations_for_node("ad_insights_daily")
    assert raw.partition == db.partition == key
    assert set(raw.metadata) == {
        "rows",
        "quarantined",
        "path",
        "api_calls",
        "graph_server",
        "graph_seconds",
        "pages",
        "retries",
        "throttle_waits",
        "waited_seconds",
        "page_size_reductions",
    }
    assert raw.metadata["rows"].value == len(expected)
    assert db.metadata["upsert_seconds"].value >= 0
    timing = ("database", "upsert_seconds")
    assert {k: v.value for k, v in db.metadata.items() if k not in timing} == {
        "rows": len(expected),
        "inserted": len(expected),
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "leads": db.metadata["leads"].value,
        "table": "ad_insights_daily",
    }


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


def _range_run(resources, account: str, first: str, last: str) -> dg.ExecuteInProcessResult:
    from crm_pipeline.defs.crm.assets import ad_insights_daily
    from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
    from crm_pipeline.defs.facebook.partitions import (
        insights_partition_range,
        partition_range_tags,
    )

    return dg.materialize(
        [fb_ad_insights_raw, ad_insights_daily],
        tags=partition_range_tags(insights_partition_range(account, first, last)),
        resources=resources,
    )


def test_malformed_rows_in_a_range_are_quarantined_on_their_own_day(clean_db, database_url, dirs):
    first, last = "2026-10-01", "2026-10-03"
    with GraphEmulator(_MalformedData()) as server:  # one bad row: the query's first
        result = _range_run(_resources(database_url, server.url, dirs), "act_1001", first, last)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["quarantined"].value == 1
    quarantined = {
        e.partition.keys_by_dimension["date"]: e.metadata["quarantined"].value
        for e in result.asset_materializations_for_node("fb_ad_insights_raw")
    }
    assert quarantined == {first: 1, "2026-10-02": 0, last: 0}
    base = dirs["data"] / "quarantine" / "fb_ad_insights" / "account=act_1001"
    assert sorted(p.name for p in base.iterdir()) == [f"date={first}"]
    ads = len(EmulatorData().ads("act_1001"))
    with clean_db.connect() as conn:
        per_day = dict(
            conn.execute(
                text("SELECT date::text, count(*) FROM ad_insights_daily GROUP BY date")
            ).all()
        )
    assert per_day == {first: ads - 1, "2026-10-02": ads, last: ads}


def test_async_report_runs_cover_a_range_with_the_same_rows(clean_db, database_url, dirs):
    first, last = "2026-10-01", "2026-10-04"
    with GraphEmulator(EmulatorData()) as server:
        assert _range_run(
            _resources(database_url, server.url, dirs), "act_1002", first, last
        ).success
    synchronous = _snapshot(clean_db)["ad_insights_daily"]
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE ad_insights_daily"))
    resources = _resources(database_url, None, dirs)
    with GraphEmulator(EmulatorData()) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url, ad_account_ids="act_1002", insights_mode="async"
        )
        result = _range_run(resources, "act_1002", first, last)
        created = [r for r in server.requests if r.method == "POST"]
    assert result.success
    assert len(created) == 1, "one report run for the whole range"
    assert _snapshot(clean_db)["ad_insights_daily"] == synchronous


def test_a_long_range_is_read_in_windows_of_at_most_the_configured_days(
    clean_db, database_url, dirs
):
    resources = _resources(database_url, None, dirs)
    with GraphEmulator(EmulatorData()) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url, ad_account_ids="act_1001", insights_days_per_query=2
        )
        assert _range_run(resources, "act_1001", "2026-10-01", "2026-10-05").success
        windows = _insight_windows(server)
    assert windows == [
        ("act_1001", "2026-10-01", "2026-10-02"),
        ("act_1001", "2026-10-03", "2026-10-04"),
        ("act_1001", "2026-10-05", "2026-10-05"),
    ]
