"""each_account: accounts side by side, every account read to its end, failures reported."""

import threading

import pytest

from crm_pipeline.facebook.account_threads import AccountOutcome, each_account, first_failure


def test_accounts_run_side_by_side():
    # Each account waits for all the others: only threads running at once get past it.
    accounts = [f"act_{n}" for n in range(5)]
    barrier = threading.Barrier(len(accounts), timeout=5)

    def work(account: str) -> str:
        barrier.wait()
        return account.upper()

    outcomes = list(each_account(work, accounts))
    assert sorted(o.value for o in outcomes) == sorted(a.upper() for a in accounts)
    assert all(o.error is None for o in outcomes)


def test_threads_are_capped():
    running, most, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def work(account: str) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                release.set()
        release.wait(5)
        with lock:
            running -= 1

    list(each_account(work, [f"act_{n}" for n in range(6)], threads=2))
    assert most == 2


def test_one_failure_does_not_stop_the_others():
    def work(account: str) -> str:
        if account == "act_2":
            raise RuntimeError("act_2 is broken")
        return account

    outcomes = {o.account_id: o for o in each_account(work, ["act_1", "act_2", "act_3"])}
    assert outcomes["act_1"].value == "act_1" and outcomes["act_3"].value == "act_3"
    assert isinstance(outcomes["act_2"].error, RuntimeError)


def test_a_single_account_runs_in_the_calling_thread():
    seen = []
    list(each_account(lambda a: seen.append(threading.current_thread()), ["act_1"]))
    assert seen == [threading.current_thread()]


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ({}, None),
        ({"act_1": TimeoutError("slow")}, "act_1"),
        # A settled error (retrying cannot help) is raised before a retryable one.
        ({"act_1": TimeoutError("slow"), "act_2": PermissionError("no")}, "act_2"),
    ],
)
def test_first_failure_prefers_a_settled_error(errors, expected):
    outcomes = [
        AccountOutcome(a, error=errors.get(a), value=None if a in errors else 1)
        for a in ("act_1", "act_2", "act_3")
    ]
    failed = first_failure(outcomes, settled=lambda e: isinstance(e, PermissionError))
    assert (failed.account_id if failed else None) == expected
