"""The governor inside GraphClient: the real SDK against the emulator, with injected faults."""

from __future__ import annotations

import math
import random
from datetime import date

import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator

from crm_pipeline.config import load_settings
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_registry import GovernorRegistry, GovernorRouter
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline_tests.facebook.fakes import FakeTime

SINCE, UNTIL = date(2026, 2, 2), date(2026, 2, 8)  # 7 days x 12 ads = 84 rows per account
ROWS = 84


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def plan() -> FaultPlan:
    return FaultPlan()


@pytest.fixture
def emu(token, plan):
    with GraphEmulator(EmulatorData(seed=7), expected_token=token, faults=plan) as server:
        yield server


def governed(emu, token, fake, **settings) -> GraphClient:
    governor = RateLimitGovernor(
        GovernorSettings(**{"jitter": 0.0, **settings}),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(3),
    )
    return GraphClient(emu.url, token, app_secret="s3cr3t-app", governor=governor)


def expected_rows(account="act_1001"):
    return EmulatorData(seed=7).insights(account, SINCE, UNTIL)


def test_throttle_waits_meta_estimate_then_gets_every_row(emu, token, plan, fake):
    plan.add(Fault("throttle", code=80000, eta_minutes=2, count=2, path="/insights"))
    client = governed(emu, token, fake)
    rows = list(client.iter_insights("act_1001", SINCE, UNTIL, limit=10))
    assert rows == expected_rows()
    assert fake.sleeps == [120, 120]  # estimated_time_to_regain_access, minutes -> seconds
    stats = client.governor.stats
    assert (stats.throttle_waits, stats.retries) == (2, 2)
    assert client.calls == math.ceil(ROWS / 10) + 2 == len(emu.requests)


@pytest.mark.parametrize("code", [4, 17, 32, 613])
def test_throttle_codes_without_eta_back_off(emu, token, plan, fake, code):
    plan.add(Fault("throttle", code=code, count=3))
    client = governed(emu, token, fake, base_backoff_seconds=0.5)
    assert len(list(client.iter_campaigns("act_1001"))) == 2
    assert fake.sleeps == [0.5, 1.0, 2.0]


def test_transient_500s_are_retried(emu, token, plan, fake):
    plan.add(Fault("transient", count=3, path="/insights"))
    client = governed(emu, token, fake, base_backoff_seconds=0.25)
    assert list(client.iter_insights("act_1001", SINCE, UNTIL, limit=25)) == expected_rows()
    assert fake.sleeps == [0.25, 0.5, 1.0]
    assert client.governor.stats.retries == 3


def test_reduce_data_halves_the_page_size_then_restores_it(emu, token, plan, fake):
    plan.add(Fault("reduce_data", count=2, path="/insights"))
    client = governed(emu, token, fake, restore_page_size_after=2)
    rows = list(client.iter_insights("act_1001", SINCE, UNTIL, limit=20))
    assert rows == expected_rows()
    limits = [int(r.params["limit"]) for r in emu.requests]
    # 20 -> 10 -> 5 on the errors, then doubled back after every 2 successful pages.
    assert limits[:3] == [20, 10, 5]
    assert limits[3:6] == [5, 10, 10] and max(limits[6:]) == 20
    stats = client.governor.stats
    assert (stats.page_size_reductions, stats.page_size_restores) == (2, 2)
    assert fake.sleeps == []


def test_invalid_token_fails_fast_with_a_clear_message(emu, token, plan, fake):
    plan.add(Fault("invalid_token", count=5))
    client = governed(emu, token, fake)
    with pytest.raises(GraphApiError) as info:
        list(client.iter_insights("act_1001", SINCE, UNTIL))
    error = info.value
    assert client.calls == 1 and fake.sleeps == []
    assert error.code == 190 and not error.retryable
    assert "rejected the access token" in str(error) and "FB_ACCESS_TOKEN" in str(error)
    for text in (str(error), repr(error), str(error.args)):
        assert token not in text and "s3cr3t-app" not in text


@pytest.mark.parametrize("code", [10, 200])
def test_permission_errors_fail_fast(emu, token, plan, fake, code):
    plan.add(Fault("permission", code=code, count=5))
    client = governed(emu, token, fake)
    with pytest.raises(GraphApiError) as info:
        list(client.iter_ads("act_1001"))
    assert client.calls == 1 and fake.sleeps == []
    assert info.value.code == code and "permission" in str(info.value)
    assert token not in f"{info.value} {info.value!r}"


def test_budget_exceeded_ends_the_read_with_a_clear_message(emu, token, plan, fake):
    plan.add(Fault("throttle", code=80000, eta_minutes=5, count=10))
    client = governed(emu, token, fake, max_wait_seconds=60)
    with pytest.raises(RateLimitBudgetExceeded) as info:
        list(client.iter_insights("act_1001", SINCE, UNTIL))
    text = str(info.value)
    assert "5.0 min" in text and "CRM_GRAPH_MAX_WAIT_SECONDS" in text and "60 s" in text
    assert token not in f"{text} {info.value!r}"
    assert isinstance(info.value, GraphApiError) and not info.value.retryable
    assert fake.sleeps == [] and client.calls == 1


def test_high_usage_slows_calls_down_before_any_throttle(emu, token, fake):
    emu.set_usage(90)
    client = governed(emu, token, fake, base_backoff_seconds=1, slow_down_factor=30)
    list(client.iter_insights("act_1001", SINCE, UNTIL, limit=20))
    pages = math.ceil(ROWS / 20)
    # The first call had seen no header yet; each later one paused 30 s * (90-75)/25.
    assert fake.sleeps == [pytest.approx(18)] * (pages - 1)
    assert client.governor.stats.max_usage_pct == 90


def test_low_usage_costs_no_pause(emu, token, fake):
    emu.set_usage(50)
    client = governed(emu, token, fake)
    list(client.iter_insights("act_1001", SINCE, UNTIL, limit=20))
    assert fake.sleeps == []


def test_one_governor_per_account_is_shared_across_clients(emu, token, fake):
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock, rng_seed=1)
    first = GraphClient(emu.url, token, governor=registry)
    second = GraphClient(emu.url, token, governor=registry)
    assert isinstance(first.governor, GovernorRouter)
    assert first.governor.for_account("act_1001") is second.governor.for_account("1001")

    emu.set_usage(95)
    list(first.iter_campaigns("act_1001"))  # the first client learns the account is busy
    emu.set_usage(1)
    fake.sleeps.clear()
    list(second.iter_campaigns("act_1001"))  # its very first call already slows down
    assert len(fake.sleeps) == 1 and fake.sleeps[0] > 0
    fake.sleeps.clear()
    list(second.iter_campaigns("act_1002"))  # another account has its own governor
    assert fake.sleeps == []
    # Stats are per client; the shared governor saw every call to its account.
    assert (first.governor.stats.calls, second.governor.stats.calls) == (1, 2)
    assert registry.get("act_1001").stats.calls == 2


def test_shared_throttle_state_across_clients(emu, token, plan, fake):
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock, rng_seed=1)
    first = GraphClient(emu.url, token, governor=registry)
    second = GraphClient(emu.url, token, governor=registry)
    plan.add(Fault("throttle", code=80004, eta_minutes=1, count=1))
    seen = {}

    def sleep(seconds):
        if not seen:  # the second client calls while the first waits out the throttle
            seen["rows"] = None
            seen["rows"] = len(list(second.iter_campaigns("act_1001")))
            seen["second_waited"] = list(fake.sleeps)
        fake.sleep(seconds)

    registry.get("act_1001").sleep = sleep
    assert len(list(first.iter_campaigns("act_1001"))) == 2
    assert seen == {"rows": 2, "second_waited": [60]}
    assert second.governor.stats.throttle_waits == 1


@pytest.mark.parametrize("limit", [5, 10, 25, 84, 500])
def test_calls_within_ten_percent_of_the_minimum_pages(emu, token, fake, limit):
    client = governed(emu, token, fake)
    rows = list(client.iter_insights("act_1001", SINCE, UNTIL, limit=limit))
    assert len(rows) == ROWS
    minimum = math.ceil(ROWS / limit)
    assert minimum <= client.calls <= math.ceil(minimum * 1.1)
    assert client.governor.stats.calls == client.calls


def test_default_client_uses_env_settings(emu, token, monkeypatch):
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "7")
    monkeypatch.setenv("CRM_GRAPH_BACKOFF_BASE_SECONDS", "0.01")
    settings = load_settings().graph.governor_settings()
    client = GraphClient(emu.url, token, governor=GovernorRegistry(), governor_settings=settings)
    assert client.governor.settings.max_wait_seconds == 7
    assert client.governor.settings.base_backoff_seconds == 0.01
    assert client.governor.for_account("act_1001").settings.max_wait_seconds == 7
    # The product's client, the Dagster resource's, is built with them.
    with GraphApiResource(graph_url=emu.url, ad_account_ids="act_1001").session() as graph:
        assert graph.client.governor.settings == settings
