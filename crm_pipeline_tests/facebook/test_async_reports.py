"""Async report runs (AsyncInsightsRun over a GraphClient) against the emulator, on fake time."""

from __future__ import annotations

import math
import random
from datetime import date

import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

from crm_pipeline.facebook.async_reports import AsyncInsightsRun, ReportSlice
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_registry import GovernorRegistry
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline_tests.facebook.fakes import FakeTime

SINCE, UNTIL = date(2026, 2, 2), date(2026, 2, 8)
ROWS = 84  # 12 ads x 7 days


@pytest.fixture
def plan() -> FaultPlan:
    return FaultPlan()


@pytest.fixture
def emu(token, plan):
    with GraphEmulator(
        EmulatorData(seed=7), expected_token=token, faults=plan, async_polls_to_complete=3
    ) as server:
        yield server


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(emu, token, fake) -> GraphClient:
    governor = RateLimitGovernor(
        GovernorSettings(base_backoff_seconds=0.5, jitter=0.0),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(5),
    )
    return GraphClient(emu.url, token, governor=governor)


def run_async(client, fake, since=SINCE, until=UNTIL, **options) -> AsyncInsightsRun:
    """An async read of act_1001 whose polls wait on the fake clock (as the governor does)."""
    return AsyncInsightsRun(
        client, "act_1001", since, until, sleep=fake.sleep, clock=fake.clock, **options
    )


def key(row):
    return (row["ad_id"], row["date_start"])


def sync_rows(client, account="act_1001"):
    return sorted(client.iter_insights(account, SINCE, UNTIL), key=key)


def test_async_rows_equal_the_synchronous_read(emu, client, fake):
    run = run_async(client, fake, limit=25)
    rows = list(run)
    assert sorted(rows, key=key) == sync_rows(client)
    assert (run.stats.jobs_started, run.stats.jobs_completed, run.stats.splits) == (1, 1, 0)
    (report,) = emu.report_runs
    assert report["async_status"] == "Job Completed"


def test_polls_until_completed_with_growing_intervals(emu, client, fake):
    before = client.calls
    run = run_async(client, fake, limit=25)
    list(run)
    # 1 POST + 3 status polls (the emulator completes on the 3rd) + ceil(84/25) result pages:
    # within 10% of the minimum calls for this read.
    minimum = 1 + 3 + math.ceil(ROWS / 25)
    assert client.calls - before == minimum
    assert run.stats.polls == 3
    sleeps = fake.sleeps  # the governor's waits and the polls', on one fake clock
    assert sleeps == sorted(sleeps) and len(set(sleeps)) > 1  # backoff between polls


def test_a_job_failing_twice_is_retried_then_split(emu, client, fake, plan):
    plan.add(Fault("async_fail", count=2))
    run = run_async(client, fake, job_retries=1, limit=10)
    rows = list(run)
    assert sorted(rows, key=key) == sync_rows(client)
    assert len(rows) == ROWS == len({key(r) for r in rows})
    stats = run.stats
    assert (stats.jobs_failed, stats.job_retries, stats.splits) == (2, 1, 1)
    # The split asked for one job per campaign of the account.
    posts = [r for r in emu.requests if r.method == "POST"]
    filters = [p.params.get("filtering") for p in posts]
    # Every job asks for ads of every status; the account's jobs name no object.
    assert all('"ad.effective_status"' in f for f in filters)
    assert not any(".id" in f for f in filters[:2])
    assert all('"campaign.id"' in f and '"IN"' in f for f in filters[2:])
    assert len(filters[2:]) == 2  # the emulator's account has 2 campaigns


def test_with_default_retries_two_failures_need_no_split(client, fake, plan):
    plan.add(Fault("async_fail", count=2))
    run = run_async(client, fake)
    assert len(list(run)) == ROWS
    assert (run.stats.job_retries, run.stats.splits, run.stats.jobs_started) == (2, 0, 3)


def test_splits_go_down_to_adsets_and_ads(emu, client, fake, plan):
    # account, then both campaigns, then the first adset fail: 1 + 2 + 1 splits.
    plan.add(Fault("async_fail", count=4))
    run = run_async(client, fake, job_retries=0)
    rows = list(run)
    assert sorted(rows, key=key) == sync_rows(client)
    assert run.stats.splits == 4
    filters = " ".join(r.params.get("filtering", "") for r in emu.requests if r.method == "POST")
    assert '"adset.id"' in filters and '"ad.id"' in filters


@pytest.mark.parametrize("max_in_flight", [1, 2, 3])
def test_never_more_than_max_in_flight_jobs(emu, client, fake, plan, max_in_flight):
    plan.add(Fault("async_fail", count=3))  # split into many jobs
    run = run_async(client, fake, job_retries=0, max_in_flight=max_in_flight)
    assert len(list(run)) == ROWS
    assert run.stats.jobs_started > max_in_flight
    assert emu.async_jobs_max_in_flight == run.stats.max_in_flight == max_in_flight


def test_ad_level_failures_halve_the_date_range(client, fake):
    run = run_async(client, fake)
    halves = run._split(ReportSlice(SINCE, UNTIL, "ad", "42"), "Job Failed")
    assert [(h.since, h.until, h.level, h.object_id) for h in halves] == [
        (SINCE, date(2026, 2, 5), "ad", "42"),
        (date(2026, 2, 6), UNTIL, "ad", "42"),
    ]
    with pytest.raises(GraphApiError, match="cannot be split further"):
        run._split(ReportSlice(SINCE, SINCE, "ad", "42"), "Job Failed")


def test_a_job_that_always_fails_ends_with_a_clear_error(emu, client, fake, plan):
    plan.add(Fault("async_fail", count=1000))
    run = run_async(client, fake, until=SINCE, job_retries=0, max_in_flight=1)
    with pytest.raises(GraphApiError) as info:
        list(run)
    assert "Job Failed" in str(info.value) and "cannot be split further" in str(info.value)
    assert info.value.retryable
    # One job at a time, depth first: account, a campaign, an adset, an ad; one day: no halves.
    assert run.stats.jobs_started == 4
    posts = [r.params.get("filtering", "") for r in emu.requests if r.method == "POST"]
    assert ['"campaign.id"' in posts[1], '"adset.id"' in posts[2], '"ad.id"' in posts[3]] == [
        True,
        True,
        True,
    ]


def test_throttled_polls_are_governed(emu, client, fake, plan):
    plan.add(Fault("throttle", code=80000, count=2, path="/612"))
    run = run_async(client, fake)
    assert len(list(run)) == ROWS
    assert client.governor.stats.throttle_waits == 2


def test_report_run_calls_are_billed_to_the_account_governor(emu, token, fake):
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock, rng_seed=1)
    client = GraphClient(emu.url, token, governor=registry)
    run = run_async(client, fake)
    list(run)
    assert registry.get("act_1001").stats.calls == client.calls
    assert registry.get(None).stats.calls == 0
    assert run.stats.jobs_completed == 1
