"""Work on many ad accounts at once: one thread per account, results as each account finishes.

Meta rate-limits each ad account (and the app) on its own, so an agency's accounts are read side
by side: each account's requests run in its own thread, one after another as its cursor pages
demand, and the rate-limit governors decide how many requests are in flight (per account and
for the whole app, `CRM_GRAPH_CALLS_PER_ACCOUNT` / `CRM_GRAPH_MAX_CALLS_IN_FLIGHT`). A thread
that waits out its account's throttle holds no request slot, so the other accounts go on.

One account's failure never stops the others: every account is read to its end, and the
failures come back with the results for the caller to report and raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MAX_ACCOUNT_THREADS", "AccountOutcome", "each_account", "first_failure"]

T = TypeVar("T")

# Threads mostly wait on HTTP; each holds at most one query window of rows in memory, which is
# what bounds a run's memory. Past this many accounts, later accounts start as earlier finish.
MAX_ACCOUNT_THREADS = 32


@dataclass(frozen=True)
class AccountOutcome(Generic[T]):
    """What one account's work returned, or the error it raised."""

    account_id: str
    value: T | None = None
    error: BaseException | None = None


def each_account(
    work: Callable[[str], T],
    account_ids: Sequence[str],
    *,
    threads: int = MAX_ACCOUNT_THREADS,
) -> Iterator[AccountOutcome[T]]:
    """Run `work(account_id)` for every account, each in its own thread (at most `threads` at
    once), yielding each account's outcome as it finishes.

    The caller consumes outcomes in its own thread (e.g. a Dagster step reporting metadata,
    which is not thread-safe) while the other accounts are still being read. With one account
    the work runs in the calling thread: no thread for nothing.
    """
    accounts = list(dict.fromkeys(account_ids))
    if len(accounts) <= 1 or threads <= 1:
        for account_id in accounts:
            yield _run(work, account_id)
        return
    with ThreadPoolExecutor(
        max_workers=min(threads, len(accounts)), thread_name_prefix="graph-account"
    ) as pool:
        futures = [pool.submit(_run, work, account_id) for account_id in accounts]
        for future in as_completed(futures):
            yield future.result()


def _run(work: Callable[[str], T], account_id: str) -> AccountOutcome[T]:
    try:
        return AccountOutcome(account_id, value=work(account_id))
    except Exception as exc:  # reported by the caller with the account it belongs to
        return AccountOutcome(account_id, error=exc)


def first_failure(
    outcomes: Sequence[AccountOutcome], *, settled: Callable[[BaseException], bool]
) -> AccountOutcome | None:
    """The failed outcome to raise for a batch: a settled error (retrying will not help, e.g.
    a permission error) before a retryable one, so the run is not retried for nothing; None
    when every account succeeded."""
    failed = [o for o in outcomes if o.error is not None]
    for outcome in failed:
        if settled(outcome.error):
            return outcome
    return failed[0] if failed else None
