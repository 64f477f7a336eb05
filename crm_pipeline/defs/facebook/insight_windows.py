"""An insights step over many accounts and days: windows of days per account, accounts at once.

A run's partitions (account × day) are cut into each account's windows of consecutive days (one
/insights query each). Accounts are read side by side, one thread each
(:mod:`crm_pipeline.facebook.account_threads`): Meta limits each ad account on its own, and the
governors keep each account (and the app) within its limits. An account's windows are read one
after another. Each window lands one Parquet file per day; the step reports every partition's
metadata from its own thread as each account finishes.

One account failing does not stop the others from being read and landed; the step then fails,
naming the account, so the run is retried (a permission error: not retried) and every
account-day stays unmaterialised: Dagster 1.13 cannot mark part of a ranged run as failed
(dagster-io/dagster#17836).
"""

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from crm_pipeline.defs.facebook.graph_usage import graph_metadata
from crm_pipeline.defs.facebook.partitions import (
    account_and_day,
    add_partition_metadata,
    days_by_account,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.facebook.step_rules import (
    failing_fast,
    quarantine_check,
    raise_first_failure,
)
from crm_pipeline.facebook import validate
from crm_pipeline.facebook.account_threads import each_account
from crm_pipeline.facebook.client import GraphClient

__all__ = [
    "DaySplit",
    "LandedDay",
    "LandedWindow",
    "Window",
    "account_windows",
    "chunks",
    "land_windows",
    "split_by_day",
]


@dataclass(frozen=True)
class Window:
    """One /insights query: an account's consecutive `days`, `since`..`until`."""

    account_id: str
    days: list[str]
    since: dt.date
    until: dt.date


@dataclass
class LandedDay:
    """One account-day's landed file: its metadata, malformed rows and quarantine file."""

    day: str
    metadata: dict[str, Any]
    bad: list[dict] = field(default_factory=list)
    bad_path: Any = None


@dataclass
class LandedWindow:
    """What one window landed, a line for the run's log, and rows malformed in no one day."""

    window: Window
    days: list[LandedDay]
    log: str
    bad: list[dict] = field(default_factory=list)


def account_windows(account_days: Iterable[tuple[str, str]], most: int) -> Iterator[Window]:
    """Each account's consecutive days, cut into windows of at most `most` days."""
    most = max(1, most)
    for account_id, runs in days_by_account(account_days).items():
        for run in runs:
            for start in range(0, len(run), most):
                days = run[start : start + most]
                yield Window(
                    account_id,
                    days,
                    dt.date.fromisoformat(days[0]),
                    dt.date.fromisoformat(days[-1]),
                )


def land_windows(
    context: dg.AssetExecutionContext,
    graph_api: GraphApiResource,
    asset_key: str,
    land_window: Callable[[GraphClient, Window], LandedWindow],
) -> dg.MaterializeResult:
    """Land the run's account-days with `land_window` (one call per window, an account's
    windows in order, accounts at once) and report them: per-partition metadata, the run's API
    usage, range totals and the quarantine check of `asset_key`."""
    keys = {account_and_day(key): key for key in context.partition_keys}
    by_account: dict[str, list[Window]] = {}
    for window in account_windows(keys, graph_api.insights_days_per_query):
        by_account.setdefault(window.account_id, []).append(window)
    report = _Report()
    with failing_fast(), graph_api.session() as graph:

        def land_account(account_id: str) -> list[LandedWindow]:
            return [land_window(graph.client, w) for w in by_account[account_id]]

        outcomes = []
        for outcome in each_account(land_account, list(by_account)):
            outcomes.append(outcome)
            if outcome.error is not None:
                context.log.error(f"{asset_key} {outcome.account_id} failed: {outcome.error}")
                continue
            for landed in outcome.value or []:
                report.add(context, keys, landed)
        raise_first_failure(outcomes)
        usage = graph_metadata(graph)
    return report.result(asset_key, usage)


@dataclass
class _Report:
    """The step's totals, gathered in the step's own thread as accounts finish."""

    days: list[dict[str, Any]] = field(default_factory=list)
    bad: dict[int, dict] = field(default_factory=dict)  # distinct (a stray row is in every day)
    bad_paths: list = field(default_factory=list)

    def add(self, context: dg.AssetExecutionContext, keys: dict, landed: LandedWindow) -> None:
        context.log.info(landed.log)
        self.bad.update({id(b["record"]): b for b in landed.bad})
        for day in landed.days:
            self.bad.update({id(b["record"]): b for b in day.bad})
            self.bad_paths += [day.bad_path] if day.bad_path else []
            key = keys[(landed.window.account_id, day.day)]
            add_partition_metadata(context, day.metadata, key, len(keys))
            self.days.append(day.metadata)

    def result(self, asset_key: str, usage: dict[str, Any]) -> dg.MaterializeResult:
        # Every partition's event carries the API usage of the run; rows, quarantined and path
        # are the partition's own (added as each account finished). A range gets its totals.
        metadata: dict[str, Any] = dict(usage)
        if len(self.days) > 1:
            metadata.update(
                range_partitions=len(self.days),
                range_rows=sum(d["rows"] for d in self.days),
                range_quarantined=len(self.bad),
            )
        paths = self.bad_paths
        check = quarantine_check(
            asset_key,
            list(self.bad.values()),
            paths[0] if len(paths) == 1 else None,
            **({"quarantined_files": len(paths)} if len(paths) > 1 else {}),
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])


def split_by_day(
    rows: list[dict],
    days: list[str],
    check: Callable[[list[dict], str], validate.Checked],
) -> dict[str, validate.Checked]:
    """One query's rows checked per day of `days` with `check(rows, day)`, keyed on
    `date_start`.

    A row whose date_start is none of `days` cannot be placed: it is quarantined in every day
    of the query, so none of them is mirrored (its row might belong to any of them). For one
    day this is exactly checking every row against that day.
    """
    buckets: dict[str, list[dict]] = {day: [] for day in days}
    for row in rows:
        day = row.get("date_start") if isinstance(row, dict) else None
        if isinstance(day, str) and day in buckets:
            buckets[day].append(row)
        else:
            for bucket in buckets.values():
                bucket.append(row)
    return {day: check(bucket, day) for day, bucket in buckets.items()}


def chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """`rows` in lists of at most `size` (the last may be shorter), read lazily: with a page's
    worth at a time, each list is checked while the next page is on its way."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, max(1, size))):
        yield chunk


@dataclass
class DaySplit:
    """:func:`split_by_day` a chunk of rows at a time, each day's good rows converted to Arrow
    as they come.

    An agency's accounts are read side by side and, sharing the request slots fairly, all
    finish together: checking and converting each window's rows only after its last page would
    put all of that work after the last answer, one process's CPU doing every account's at
    once. Fed each page as it arrives, the work overlaps the answers still being waited for,
    and the result is exactly that of splitting all the rows at once.
    """

    days: list[str]
    check: Callable[[list[dict], str], validate.Checked]
    convert: Callable[[list[dict]], pa.Table]
    rows: int = 0
    bad: dict[str, list[dict]] = field(default_factory=dict)
    _tables: dict[str, list[pa.Table]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bad = {day: [] for day in self.days}

    def add(self, rows: list[dict]) -> None:
        """Check one chunk of the window's rows and keep each day's good ones."""
        self.rows += len(rows)
        for day, checked in split_by_day(rows, self.days, self.check).items():
            self.bad[day].extend(checked.bad)
            if checked.good:
                self._tables.setdefault(day, []).append(self.convert(checked.good))

    def good(self, day: str) -> pa.Table:
        """`day`'s good rows so far, in the order they came (an empty table when none)."""
        tables = self._tables.get(day)
        if not tables:
            return self.convert([])
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
