"""Many ad accounts at once: request slots per account and per app, shared app usage and throttle.

Slot tests use real threads and short real sleeps (each well under a second); the pacing and
throttle tests use the fake clock, calling the other account from inside the throttled one's
sleep as ``test_governor.py`` does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from crm_pipeline.config import load_settings
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_registry import GovernorRegistry
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.governor_slots import Slots
from crm_pipeline_tests.facebook.fakes import FakeTime
from crm_pipeline_tests.facebook.test_governor import Response, Script, buc, fb_error

# Long enough for the threads to overlap when nothing stops them, short enough to stay fast.
SEND_SECONDS = 0.02
# How long a test waits for something that should happen at once, before calling it broken.
PATIENCE = 1.0


class InFlight:
    """A ``send`` that records how many calls are inside it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.calls = 0

    def __call__(self) -> Response:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        time.sleep(SEND_SECONDS)
        with self._lock:
            self.now -= 1
        return Response()


def settings(**overrides) -> GovernorSettings:
    return GovernorSettings(**{"jitter": 0.0, "base_backoff_seconds": 1.0, **overrides})


def run_threads(*targets: Callable[[], object]) -> None:
    """Run each target in its own thread; re-raise the first failure in the test's thread."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5 * PATIENCE)
        assert not thread.is_alive(), "a governed call never finished"
    if errors:
        raise errors[0]


def repeat(call: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            call()

    return run


def app_usage(pct: float) -> dict[str, str]:
    return {"X-App-Usage": json.dumps({"call_count": pct, "total_cputime": 1, "total_time": 1})}


def account_usage(pct: float) -> dict[str, str]:
    return {"X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": pct})}


# -- request slots ---------------------------------------------------------------------------------


def test_one_call_in_flight_per_account():
    governor = GovernorRegistry().get("act_1", settings(calls_per_account=1))
    send = InFlight()
    run_threads(*[repeat(lambda: governor.call(send), 3) for _ in range(5)])
    assert send.calls == 15
    assert send.most == 1


def test_different_accounts_run_in_parallel():
    registry = GovernorRegistry()
    both_in_flight = threading.Barrier(2, timeout=PATIENCE)

    def send() -> Response:
        both_in_flight.wait()  # breaks (raises) unless the other account's call is in flight too
        return Response()

    run_threads(*[lambda a=a: registry.get(a, settings()).call(send) for a in ("act_1", "act_2")])


def test_calls_per_account_allows_parallel_calls_of_one_account():
    registry = GovernorRegistry()
    registry.get("act_1", settings())  # created with 1 slot, then the settings change
    governor = registry.get("act_1", settings(calls_per_account=2))
    both_in_flight = threading.Barrier(2, timeout=PATIENCE)

    def send() -> Response:
        both_in_flight.wait()
        return Response()

    run_threads(lambda: governor.call(send), lambda: governor.call(send))


def test_max_calls_in_flight_caps_every_account_together():
    registry = GovernorRegistry()
    send = InFlight()
    accounts = [f"act_{n}" for n in range(1, 6)]
    governors = [registry.get(a, settings(max_calls_in_flight=2)) for a in accounts]
    run_threads(*[repeat(lambda g=g: g.call(send), 3) for g in governors])
    assert send.calls == 15
    assert send.most == 2  # capped, yet two accounts did run side by side


def test_a_governor_created_alone_has_its_own_app_slots():
    alone, other = RateLimitGovernor(settings()), RateLimitGovernor(settings())
    assert alone.app is not other.app
    registry = GovernorRegistry()
    assert registry.get("act_1").app is registry.get("act_2").app is registry.app


def test_settings_resize_the_app_slots():
    registry = GovernorRegistry()
    assert registry.app.slots.limit == 8
    registry.get("act_1", settings(max_calls_in_flight=3))
    assert registry.app.slots.limit == 3


def test_growing_slots_lets_a_waiter_in_and_shrinking_waits_for_holders():
    slots = Slots(1)
    entered = threading.Event()

    def second_holder() -> None:
        with slots.held():
            entered.set()

    with slots.held():
        waiter = threading.Thread(target=second_holder, daemon=True)
        waiter.start()
        assert not entered.wait(SEND_SECONDS)  # full
        slots.resize(2)
        assert entered.wait(PATIENCE)  # let in while the first slot is still held
        waiter.join(PATIENCE)
        slots.resize(1)
        assert slots.in_flight == 1
    assert slots.in_flight == 0
    with pytest.raises(ValueError, match="at least 1"):
        slots.resize(0)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "a waiter never queued"
        time.sleep(0.001)


def test_a_released_slot_goes_to_the_longest_waiter_not_to_the_holder_asking_again():
    # An account paging through its cursor releases its slot and asks again at once, holding
    # the GIL while the waiters it woke have not run: it must queue behind them, or the first
    # accounts keep every slot and the others wait until they finish.
    slots = Slots(1)
    admitted: list[str] = []
    lock = threading.Lock()

    def take(name: str) -> None:
        with slots.held(), lock:
            admitted.append(name)

    first = threading.Thread(target=take, args=("first",), daemon=True)
    second = threading.Thread(target=take, args=("second",), daemon=True)
    with slots.held():
        first.start()
        _wait_until(lambda: slots.waiting == 1)
        second.start()
        _wait_until(lambda: slots.waiting == 2)
    # The holder let go and asks again straight away, without giving the waiters a chance.
    take("holder again")
    first.join(PATIENCE)
    second.join(PATIENCE)
    assert admitted == ["first", "second", "holder again"]
    assert slots.in_flight == 0 and slots.waiting == 0


def test_a_waiter_interrupted_while_queued_leaves_no_slot_taken():
    slots = Slots(1)
    with slots.held():
        with pytest.raises(KeyboardInterrupt):
            waiter = _InterruptedWaiter(slots)
            waiter.wait()
        assert slots.waiting == 0
    assert slots.in_flight == 0
    with slots.held():  # the slot is free again
        assert slots.in_flight == 1


class _InterruptedWaiter:
    """Queue for a slot, then be interrupted (as a step being cancelled would be)."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots

    def wait(self) -> None:
        import unittest.mock

        def interrupted(timeout=None) -> bool:
            raise KeyboardInterrupt

        with (
            unittest.mock.patch.object(threading.Event, "wait", interrupted),
            self.slots.held(),
        ):
            raise AssertionError("admitted although every slot is held")


def test_a_throttled_account_does_not_hold_a_slot_while_it_waits():
    """With one app-wide slot, account B's calls go through while account A waits out a
    throttle; were A's slot held during its wait, B would be stuck until the wait ended."""
    a_waiting, b_done = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def sleep(seconds: float) -> None:  # only A sleeps: B is neither paced nor throttled
        a_waiting.set()
        seen["b_done_during_a_wait"] = b_done.wait(PATIENCE)

    registry = GovernorRegistry(sleep=sleep)
    one_slot = settings(max_calls_in_flight=1, base_backoff_seconds=0.01)
    a, b = registry.get("act_1", one_slot), registry.get("act_2", one_slot)

    def call_b() -> None:
        assert a_waiting.wait(PATIENCE)
        b.call(InFlight())
        b.call(InFlight())
        b_done.set()

    run_threads(lambda: a.call(Script(fb_error(17), Response())), call_b)
    assert seen == {"b_done_during_a_wait": True}
    assert a.stats.throttle_waits == 1 and b.stats.throttle_waits == 0


# -- the app's usage is every account's ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "paced"),
    [(app_usage(95), True), (account_usage(95), False), (buc(95), False)],
    ids=["x-app-usage", "x-ad-account-usage", "business-use-case"],
)
def test_app_usage_seen_on_one_account_paces_the_others(headers, paced):
    fake = FakeTime(start=1000.0)
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock)
    a, b = registry.get("act_1", settings()), registry.get("act_2", settings())
    b.call(Script(Response(buc(10))))  # B's own usage is low
    a.call(Script(Response(headers)))
    fake.sleeps.clear()
    b.call(Script(Response(buc(10))))
    assert bool(fake.sleeps) is paced
    assert b.stats.slowdowns == int(paced)
    if paced:
        assert fake.sleeps == [pytest.approx(30 * (95 - 75) / 25)]


def test_the_latest_app_usage_wins():
    fake = FakeTime(start=1000.0)
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock)
    a, b = registry.get("act_1", settings()), registry.get("act_2", settings())
    a.call(Script(Response(app_usage(95))))
    a.call(Script(Response(app_usage(20))))  # paced once, then the app has recovered
    fake.sleeps.clear()
    b.call(Script())
    assert fake.sleeps == []


# -- throttles: the app's block everyone, an account's only that account ---------------------------


@pytest.mark.parametrize(
    ("code", "blocks_others"),
    [(4, True), (17, False), (613, False), (80000, False), (80004, False)],
)
def test_only_an_app_level_throttle_blocks_the_other_accounts(code, blocks_others):
    fake = FakeTime(start=1000.0)
    other: dict = {}

    def sleep_and_let_another_account_in(seconds: float) -> None:
        if not other:  # while account A waits out its throttle, account B calls
            before = other["before"] = fake.now
            other["result"] = b.call(Script(Response(body="other")))
            other["waited"] = fake.now - before
        fake.sleep(seconds)

    registry = GovernorRegistry(sleep=sleep_and_let_another_account_in, clock=fake.clock)
    a = registry.get("act_1", settings(base_backoff_seconds=10))
    b = registry.get("act_2", settings(base_backoff_seconds=10))
    assert a.call(Script(fb_error(code), Response(body="a"))).body == "a"
    assert other["result"].body == "other"
    assert other["waited"] == (10 if blocks_others else 0)
    assert b.stats.throttle_waits == int(blocks_others)


def test_an_app_throttle_also_blocks_the_app_scope_and_later_accounts():
    fake = FakeTime(start=1000.0)
    registry = GovernorRegistry(sleep=fake.sleep, clock=fake.clock)
    registry.get("act_1", settings())
    registry.app.block_until(fake.now + 30)  # as a code 4 on act_1 would
    registry.get(None, settings()).call(Script())  # pages, lead forms: the app scope
    registry.app.block_until(fake.now + 20)
    registry.get("act_9", settings()).call(Script())  # an account first called afterwards
    assert fake.sleeps == [30, 20]


# -- settings --------------------------------------------------------------------------------------


def test_in_flight_settings_from_env():
    graph = load_settings(
        {"CRM_GRAPH_CALLS_PER_ACCOUNT": "2", "CRM_GRAPH_MAX_CALLS_IN_FLIGHT": "16"}
    ).graph
    governor = graph.governor_settings()
    assert (governor.calls_per_account, governor.max_calls_in_flight) == (2, 16)
    defaults = load_settings({}).graph.governor_settings()
    assert (defaults.calls_per_account, defaults.max_calls_in_flight) == (1, 8)


@pytest.mark.parametrize(
    "variable", ["CRM_GRAPH_CALLS_PER_ACCOUNT", "CRM_GRAPH_MAX_CALLS_IN_FLIGHT"]
)
def test_in_flight_settings_must_be_positive(variable):
    with pytest.raises(ValueError, match=variable):
        load_settings({variable: "0"}).graph.governor_settings()


@pytest.mark.parametrize("field", ["calls_per_account", "max_calls_in_flight"])
def test_governor_settings_refuse_zero_slots(field):
    with pytest.raises(ValueError, match=field):
        GovernorSettings(**{field: 0})
