"""Unit tests of the rate-limit governor: fake clock and sleep, synthetic headers and errors."""

from __future__ import annotations

import json
import random
import threading

import pytest
import requests
from facebook_business.exceptions import FacebookRequestError

from crm_pipeline.config import load_settings
from crm_pipeline.facebook.error_kinds import classify_error
from crm_pipeline.facebook.errors import RateLimitBudgetExceeded
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_registry import (
    GovernorRegistry,
    GovernorRouter,
    governor_for,
    reset_governors,
)
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.usage_headers import parse_usage
from crm_pipeline_tests.facebook.fakes import FakeTime

TOKEN = "EAAsecret-token-never-printed"


class Response:
    """Shaped like the SDK's FacebookResponse as far as the governor cares."""

    def __init__(self, headers: dict | None = None, body: str = "ok") -> None:
        self._headers = headers or {}
        self.body = body

    def headers(self) -> dict:
        return self._headers


def fb_error(
    code: int | None,
    status: int = 400,
    message: str = "boom",
    *,
    headers: dict | None = None,
    subcode: int | None = None,
    transient: bool = False,
) -> FacebookRequestError:
    """A real SDK error, as FacebookResponse.error() builds it."""
    error = {"message": message, "type": "OAuthException", "is_transient": transient}
    if code is not None:
        error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    context = {"method": "GET", "path": "x", "params": {"access_token": TOKEN}}
    return FacebookRequestError(
        "Call was not successful", context, status, headers or {}, json.dumps({"error": error})
    )


def buc(pct: float, eta_minutes: float = 0) -> dict[str, str]:
    entry = {
        "type": "ads_insights",
        "call_count": pct,
        "total_cputime": 1,
        "total_time": 1,
        "estimated_time_to_regain_access": eta_minutes,
    }
    return {"X-Business-Use-Case-Usage": json.dumps({"1001": [entry]})}


class Script:
    """A ``send`` that raises or returns the given outcomes in order, recording its calls."""

    def __init__(self, *outcomes, params: dict | None = None) -> None:
        self.outcomes = list(outcomes)
        self.params = params
        self.limits: list = []

    def __call__(self):
        if self.params is not None:
            self.limits.append(self.params.get("limit"))
        outcome = self.outcomes.pop(0) if self.outcomes else Response()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @property
    def calls(self) -> int:
        return len(self.limits)


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime(start=1000.0)


def make(fake: FakeTime, **settings) -> RateLimitGovernor:
    defaults = {"jitter": 0.0, "base_backoff_seconds": 1.0}
    return RateLimitGovernor(
        GovernorSettings(**{**defaults, **settings}),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(1),
    )


# -- usage headers ---------------------------------------------------------------------------------


def test_parse_usage_reads_every_header_shape():
    headers = {
        "x-app-usage": '{"call_count": 12, "total_cputime": 40, "total_time": 7}',
        "X-Ad-Account-Usage": '{"acc_id_util_pct": 55.5, "reset_time_duration": 90}',
        "X-BUSINESS-USE-CASE-USAGE": json.dumps(
            {
                "1": [{"type": "ads_management", "call_count": 20, "total_time": 3}],
                "2": [
                    {
                        "type": "ads_insights",
                        "call_count": 61,
                        "total_cputime": 9,
                        "estimated_time_to_regain_access": 3,
                    }
                ],
            }
        ),
        "x-fb-ads-insights-throttle": '{"app_id_util_pct": 33, "acc_id_util_pct": 70.25}',
    }
    usage = parse_usage(headers)
    assert usage.by_header == {
        "x-app-usage": 40,
        "x-ad-account-usage": 55.5,
        "x-business-use-case-usage": 61,
        "x-fb-ads-insights-throttle": 70.25,
    }
    assert usage.pct == 70.25
    assert usage.eta_seconds == 180  # Meta reports minutes
    assert usage.reset_seconds == 90


@pytest.mark.parametrize(
    "headers",
    [
        {"X-App-Usage": "{not json"},
        {"X-App-Usage": "[1, 2]"},
        {"X-Business-Use-Case-Usage": '{"1": "nope"}'},
        {"X-Business-Use-Case-Usage": '{"1": [{"call_count": "lots"}]}'},
        {"X-Ad-Account-Usage": '{"acc_id_util_pct": null, "reset_time_duration": -5}'},
        {"x-fb-ads-insights-throttle": ""},
        None,
        {},
    ],
)
def test_malformed_usage_headers_are_tolerated(headers):
    usage = parse_usage(headers)
    assert usage.pct == 0 and usage.eta_seconds == 0 and usage.reset_seconds == 0


def test_usage_is_read_on_successes(fake):
    governor = make(fake)
    governor.call(Script(Response(buc(42))))
    assert governor.usage_pct == 42
    assert governor.stats.max_usage_pct == 42


def test_usage_is_read_on_errors(fake):
    governor = make(fake, max_retries=0)
    with pytest.raises(FacebookRequestError):
        governor.call(Script(fb_error(100, headers={"x-app-usage": '{"call_count": 88}'})))
    assert governor.usage_pct == 88
    assert governor.stats.max_usage_pct == 88


# -- slowing down ----------------------------------------------------------------------------------


def test_no_pause_below_the_slow_down_threshold(fake):
    governor = make(fake, slow_down_at_pct=75)
    for _ in range(3):
        governor.call(Script(Response(buc(74))))
    assert fake.sleeps == []
    assert governor.stats.slowdowns == 0


def test_slows_down_before_reaching_100_percent(fake):
    governor = make(fake, slow_down_at_pct=75, slow_down_factor=30)
    pauses = {}
    for pct in (80, 90, 99):
        governor.observe(buc(pct))
        fake.sleeps.clear()
        governor.call(Script(Response(buc(pct))))
        (pauses[pct],) = fake.sleeps
    assert 0 < pauses[80] < pauses[90] < pauses[99] <= 30
    assert pauses[90] == pytest.approx(30 * (90 - 75) / 25)
    assert governor.stats.slowdowns == 3


# -- throttling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80000, 80004, 80014])
def test_throttling_codes_wait_and_retry_instead_of_failing(fake, code):
    governor = make(fake)
    send = Script(fb_error(code, transient=True), Response(body="rows"))
    assert governor.call(send).body == "rows"
    assert len(fake.sleeps) == 1
    stats = governor.stats
    assert (stats.calls, stats.retries, stats.throttle_waits) == (2, 1, 1)


def test_throttle_honours_estimated_time_to_regain_access_in_minutes(fake):
    governor = make(fake)
    send = Script(fb_error(80000, headers=buc(100, eta_minutes=3)), Response())
    governor.call(send)
    assert fake.sleeps == [180]
    assert governor.stats.waited_seconds == 180


def test_throttle_without_eta_backs_off_exponentially(fake):
    governor = make(fake, base_backoff_seconds=2)
    governor.call(Script(fb_error(17), fb_error(17), fb_error(17), Response()))
    assert fake.sleeps == [2, 4, 8]


def test_throttles_do_not_use_up_the_error_retries(fake):
    governor = make(fake, max_retries=1)
    outcomes = [fb_error(4)] * 5 + [Response(body="done")]
    assert governor.call(Script(*outcomes)).body == "done"


def test_a_throttle_makes_other_callers_of_the_same_governor_wait(fake):
    governor = make(fake)
    other: dict = {}

    def sleep_and_let_another_caller_in(seconds):
        if not other:  # while the throttled caller sleeps, another thread calls
            before = fake.now
            other["sleeps_before"] = len(fake.sleeps)
            other["result"] = governor.call(Script(Response(body="other")))
            other["waited"] = fake.now - before
        fake.sleep(seconds)

    governor.sleep = sleep_and_let_another_caller_in
    governor.call(Script(fb_error(80000, headers=buc(100, eta_minutes=2)), Response()))
    assert other["result"].body == "other"
    assert other["waited"] == 120  # the other caller waited out Meta's estimate too
    assert governor.stats.throttle_waits == 2


# -- transient errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        fb_error(1, 500, "An unknown error occurred"),
        fb_error(2, 500, "Service temporarily unavailable", transient=True),
        fb_error(None, 502, "Bad gateway"),
        fb_error(None, 503, "Service unavailable"),
        requests.ConnectionError("connection refused"),
        requests.Timeout("read timed out"),
    ],
    ids=["code1", "code2", "http502", "http503", "connection", "timeout"],
)
def test_transient_errors_are_retried_with_backoff(fake, error):
    governor = make(fake, base_backoff_seconds=0.5)
    assert governor.call(Script(error, error, Response(body="ok"))).body == "ok"
    assert fake.sleeps == [0.5, 1.0]
    assert governor.stats.retries == 2


def test_backoff_is_jittered_within_bounds(fake):
    governor = RateLimitGovernor(
        GovernorSettings(base_backoff_seconds=1, jitter=0.25, max_retries=6),
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(7),
    )
    governor.call(Script(*[fb_error(2, 500)] * 6, Response()))
    assert len(fake.sleeps) == 6
    for attempt, seconds in enumerate(fake.sleeps):
        assert 0.75 * 2**attempt <= seconds <= 1.25 * 2**attempt
    assert len({round(s / 2**i, 6) for i, s in enumerate(fake.sleeps)}) > 1  # not constant


def test_backoff_is_capped(fake):
    governor = make(fake, base_backoff_seconds=10, max_backoff_seconds=25, max_retries=4)
    governor.call(Script(*[fb_error(2, 500)] * 4, Response()))
    assert fake.sleeps == [10, 20, 25, 25]


def test_transient_errors_give_up_after_max_retries(fake):
    governor = make(fake, max_retries=3)
    error = fb_error(2, 500)
    send = Script(*[error] * 10, params={})
    with pytest.raises(FacebookRequestError) as info:
        governor.call(send, params=send.params)
    assert send.calls == 4  # the first try and 3 retries
    assert info.value.governor_retries == 3


# -- reduce data -----------------------------------------------------------------------------------

REDUCE = "Please reduce the amount of data you're asking for, then retry your request"


def test_reduce_data_halves_the_page_size_and_retries_at_once(fake):
    governor = make(fake)
    params = {"limit": 500}
    send = Script(fb_error(1, 500, REDUCE), fb_error(1, 500, REDUCE), Response(), params=params)
    governor.call(send, params=params)
    assert send.limits == [500, 250, 125]
    assert params["limit"] == 125  # in place: the SDK cursor keeps the smaller size
    assert fake.sleeps == []
    assert governor.stats.page_size_reductions == 2


def test_page_size_is_restored_gradually_after_successes(fake):
    governor = make(fake, restore_page_size_after=2)
    params = {"limit": 400}
    governor.call(Script(fb_error(1, 500, REDUCE), fb_error(1, 500, REDUCE)), params=params)
    assert params["limit"] == 100  # and the call that succeeded counts as 1 success
    seen = []
    for _ in range(5):
        governor.call(Script(), params=params)
        seen.append(params["limit"])
    assert seen == [200, 200, 400, 400, 400]
    assert governor.stats.page_size_restores == 2


def test_page_size_never_goes_below_the_floor(fake):
    governor = make(fake, min_page_size=10, max_retries=3)
    params = {"limit": 20}
    send = Script(*[fb_error(1, 500, REDUCE)] * 3, Response(), params=params)
    governor.call(send, params=params)
    assert send.limits == [20, 10, 10, 10]
    # At the floor a reduce-data error is retried with backoff like any other transient one.
    assert fake.sleeps == [2, 4]  # backoff keeps counting from the first retry


def test_code_1_without_reduce_data_message_keeps_the_page_size(fake):
    governor = make(fake)
    params = {"limit": 50}
    governor.call(Script(fb_error(1, 500, "An unknown error occurred"), Response()), params=params)
    assert params["limit"] == 50


# -- failing fast ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [190, 102, 10, 200, 270, 299])
def test_token_and_permission_errors_fail_at_once(fake, code):
    governor = make(fake)
    send = Script(fb_error(code, 400, "nope"), Response(), params={})
    with pytest.raises(FacebookRequestError):
        governor.call(send, params=send.params)
    assert send.calls == 1 and fake.sleeps == []


def test_bad_requests_are_not_retried(fake):
    governor = make(fake)
    send = Script(fb_error(100, 400, "Invalid parameter"), Response(), params={})
    with pytest.raises(FacebookRequestError):
        governor.call(send, params=send.params)
    assert send.calls == 1


def test_unknown_exceptions_propagate_untouched(fake):
    governor = make(fake)
    send = Script(KeyError("bug"), Response(), params={})
    with pytest.raises(KeyError):
        governor.call(send, params=send.params)
    assert send.calls == 1


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (fb_error(190), "token"),
        (fb_error(200), "permission"),
        (fb_error(613, subcode=1487742), "throttle"),
        (fb_error(80003), "throttle"),
        (fb_error(1, 500, REDUCE), "reduce_data"),
        (fb_error(1, 500), "transient"),
        (fb_error(100), "fatal"),
        (requests.ConnectionError(), "transient"),
        (requests.exceptions.InvalidURL(), "fatal"),
    ],
)
def test_classification(error, kind):
    assert classify_error(error).kind == kind


# -- the wait budget -------------------------------------------------------------------------------


def test_a_wait_past_the_budget_raises_a_clear_error_without_sleeping(fake):
    governor = make(fake, max_wait_seconds=60)
    with pytest.raises(RateLimitBudgetExceeded) as info:
        governor.call(Script(fb_error(80000, headers=buc(100, eta_minutes=10))))
    error = info.value
    assert fake.sleeps == []
    text = str(error)
    assert "10.0 min" in text  # what Meta asked for
    assert "60 s" in text  # the budget
    assert "CRM_GRAPH_MAX_WAIT_SECONDS" in text
    assert "80000" in text
    assert (error.requested_seconds, error.max_wait_seconds, error.code) == (600, 60, 80000)
    assert not error.retryable
    assert TOKEN not in f"{error} {error!r}"


def test_the_budget_is_the_total_of_all_waits(fake):
    governor = make(fake, max_wait_seconds=10, base_backoff_seconds=2, max_retries=20)
    with pytest.raises(RateLimitBudgetExceeded) as info:
        governor.call(Script(*[fb_error(2, 500)] * 20))
    assert fake.sleeps == [2, 4]  # the next wait (8 s) would have reached 14 s of 10
    assert info.value.waited_seconds == 6
    assert "kept failing" in str(info.value)


def test_a_throttle_that_does_not_fit_the_budget_does_not_block_later_calls(fake):
    governor = make(fake, max_wait_seconds=60)
    with pytest.raises(RateLimitBudgetExceeded):
        governor.call(Script(fb_error(80000, headers=buc(100, eta_minutes=5))))
    governor.observe(buc(1))
    assert governor.call(Script(Response(body="next run"))).body == "next run"
    assert fake.sleeps == []


# -- settings from the environment -----------------------------------------------------------------


def test_settings_from_env():
    settings = load_settings(
        {
            "CRM_GRAPH_MAX_WAIT_SECONDS": "30",
            "CRM_GRAPH_BACKOFF_BASE_SECONDS": "0.01",
            "CRM_GRAPH_MAX_RETRIES": "3",
            "CRM_GRAPH_SLOW_DOWN_AT_PCT": "60",
        }
    ).graph.governor_settings()
    assert settings.max_wait_seconds == 30
    assert settings.base_backoff_seconds == 0.01
    assert settings.max_retries == 3
    assert settings.slow_down_at_pct == 60
    assert load_settings({}).graph.governor_settings() == GovernorSettings()


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_env_values_name_the_variable(value):
    with pytest.raises(ValueError, match="CRM_GRAPH_MAX_WAIT_SECONDS"):
        load_settings({"CRM_GRAPH_MAX_WAIT_SECONDS": value}).graph.governor_settings()


# -- sharing ---------------------------------------------------------------------------------------


def test_governor_for_returns_one_governor_per_account():
    reset_governors()
    try:
        assert governor_for("act_1001") is governor_for("1001")
        assert governor_for("act_1001") is not governor_for("act_1002")
    finally:
        reset_governors()


def test_router_routes_calls_to_the_account_governor(fake):
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock)
    router = GovernorRouter(registry, GovernorSettings(jitter=0))
    assert router.route(("act_1001", "insights"))[0] is registry.get("1001")
    assert router.route("http://127.0.0.1/v26.0/act_7/ads?after=x")[0] is registry.get("act_7")
    router.bind("6120000000001", "act_1001")
    assert router.route(("6120000000001", ""))[0] is registry.get("act_1001")
    assert router.route(("2001", "leadgen_forms"))[0] is registry.get(None)


def test_stats_are_consistent_under_concurrency(fake):
    governor = RateLimitGovernor(GovernorSettings(), sleep=lambda s: None)

    def work():
        for _ in range(50):
            governor.call(Script(Response(buc(10))))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert governor.stats.calls == 400
