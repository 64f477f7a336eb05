"""Partitions of the Facebook insights assets: one per day and ad account.

Dagster orders a MultiPartitionsDefinition's dimensions by name, so keys read `account|date`
(`act_1001|2026-11-18`) and a key range is the cross product of an account range and a date
range: `act_1001|2026-11-01`..`act_1001|2026-11-30` is exactly one account's 30 days. That is
what lets one run (a single-run backfill, `crm-pipeline sync`, a schedule tick) cover every
account's days (accounts `act_1001`..`act_1020` × days: the cross product), and fetch each
account's days with one /insights query, the accounts at once.
"""

import datetime as dt
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import dagster as dg

from crm_pipeline.config import load_settings

# The first day insights may be backfilled from; override for older accounts.
INSIGHTS_START_DATE = load_settings().graph.insights_start_date.isoformat()

# Dagster runs a partition range in one run when the run carries these two tags: its single-run
# backfills and `dagster asset materialize --partition-range` set them, and
# `context.partition_key_range`, `context.partition_keys` and the asset catalog read them.
# Dagster 1.13 has no public constant or keyword for them (`RunRequest`, `materialize` and
# `execute_in_process` take one partition key), so they are named here and nowhere else;
# crm_pipeline_tests/defs/test_sensor_and_schedule.py checks that Dagster still reads them.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
ONE_DAY = dt.timedelta(days=1)

# A run over a range writes one "planned" and one materialisation event per asset and partition
# (20 accounts x 30 days: 1,200 of each for the two insights assets), and Dagster stores them one
# write at a time unless DAGSTER_EVENT_BATCH_SIZE is set: then each batch is one write, the same
# events in the same order. Set for every process that loads these definitions (the CLI, the
# daemon's run workers); a value the operator set wins.
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
os.environ.setdefault(EVENT_BATCH_SIZE_ENV, "1000")

# The insights assets take a single-run BackfillPolicy, a parameter of `@asset` Dagster marks as
# beta; the warning would be printed by every command that loads them (`crm-pipeline sync`,
# `dagster dev`). Only that one warning is silenced: any other beta or deprecation still shows.
_BACKFILL_POLICY_BETA = r"Parameter `backfill_policy` of function `asset` is currently in beta"
warnings.filterwarnings("ignore", message=_BACKFILL_POLICY_BETA, category=dg.BetaWarning)


@contextmanager
def backfill_policy_beta_silenced() -> Iterator[None]:
    """The same filter around assets defined later (custom insights built from the YAML file):
    the module-level one does not reach code that runs under a fresh warnings state (pytest)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BACKFILL_POLICY_BETA, category=dg.BetaWarning)
        yield


def configured_account_ids() -> list[str]:
    """`FB_AD_ACCOUNT_IDS`: the account partitions, read once when the definitions load.

    With `FB_GRAPH_URL=emulator`, the command that started the emulator has set them to the
    accounts it serves before loading the definitions (`crm_pipeline.local_emulator`): loading
    never starts or asks an emulator. With none set, there are no account partitions: the code
    location still loads and shows every asset, and a run fails at once naming the missing
    variables.
    """
    return list(load_settings().ad_account_ids)


# end_offset=1 adds today's partition: the hourly run refreshes today while it is still going.
daily_partitions = dg.DailyPartitionsDefinition(start_date=INSIGHTS_START_DATE, end_offset=1)
account_partitions = dg.StaticPartitionsDefinition(configured_account_ids())


def partitioned_account_ids() -> list[str]:
    """The accounts this code location was loaded with: what schedules and syncs may target."""
    return account_partitions.get_partition_keys()


insights_partitions = dg.MultiPartitionsDefinition(
    {"date": daily_partitions, "account": account_partitions}
)


def insights_partition_key(account_id: str, day: str) -> dg.MultiPartitionKey:
    """The partition key of one account and day."""
    return dg.MultiPartitionKey({"date": day, "account": account_id})


def account_and_day(key: str) -> tuple[str, str]:
    """`(account, day)` of an insights partition key (a MultiPartitionKey or its string)."""
    keys = insights_partitions.get_partition_key_from_str(str(key)).keys_by_dimension
    return keys["account"], keys["date"]


def insights_partition_range(account_id: str, first: str, last: str) -> dg.PartitionKeyRange:
    """The key range of one account's days `first..last` (inclusive)."""
    return accounts_partition_range([account_id], first, last)


def accounts_partition_range(
    accounts: Sequence[str], first: str, last: str
) -> dg.PartitionKeyRange:
    """The key range of `accounts` × days `first..last`: the accounts must be neighbours in
    the partitions' order (one block of :func:`account_blocks`), else the range would take in
    the accounts between them."""
    blocks = account_blocks(accounts)
    if len(blocks) != 1:
        raise ValueError(f"{list(accounts)} are not neighbouring account partitions")
    return dg.PartitionKeyRange(
        str(insights_partition_key(blocks[0][0], first)),
        str(insights_partition_key(blocks[0][-1], last)),
    )


def account_blocks(accounts: Iterable[str]) -> list[list[str]]:
    """`accounts` in the partitions' order, cut where an account in between is left out: each
    block and a range of days is one partition key range (their cross product)."""
    order = {account: n for n, account in enumerate(partitioned_account_ids())}
    unknown = sorted(set(accounts) - set(order))
    if unknown:
        raise ValueError(f"{unknown} are not account partitions (FB_AD_ACCOUNT_IDS)")
    blocks: list[list[str]] = []
    for account in sorted(set(accounts), key=order.__getitem__):
        if blocks and order[account] == order[blocks[-1][-1]] + 1:
            blocks[-1].append(account)
        else:
            blocks.append([account])
    return blocks


# Dagster checks every per-partition metadata entry against all the keys of the run's range
# (`add_asset_metadata` rebuilds them on each call): O(n^2), 7 s for 600 account-days. Runs of at
# most this many partitions give each partition its own metadata; a longer range gives every
# partition the range's totals, and each account's figures are in the run's log.
PER_PARTITION_METADATA_LIMIT = 100


def add_partition_metadata(
    context: dg.AssetExecutionContext, metadata: dict, partition_key, partitions: int
) -> None:
    """`metadata` on `partition_key`'s materialisation when the run's range (`partitions`
    partitions) is short enough for Dagster to take it at a reasonable cost."""
    if partitions <= PER_PARTITION_METADATA_LIMIT:
        context.add_asset_metadata(metadata, partition_key=partition_key)


def partition_range_tags(key_range: dg.PartitionKeyRange) -> dict[str, str]:
    """Run tags that make a run (a RunRequest, a `materialize`) cover `key_range`."""
    return {PARTITION_RANGE_START_TAG: key_range.start, PARTITION_RANGE_END_TAG: key_range.end}


def contiguous_days(days: Iterable[str]) -> list[list[str]]:
    """ISO days, sorted and deduplicated, split into runs of consecutive days."""
    runs: list[list[str]] = []
    for day in sorted(set(days)):
        if runs and dt.date.fromisoformat(day) - dt.date.fromisoformat(runs[-1][-1]) == ONE_DAY:
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def days_by_account(account_days: Iterable[tuple[str, str]]) -> dict[str, list[list[str]]]:
    """`(account, day)` pairs as each account's days in runs of consecutive days."""
    days: dict[str, list[str]] = {}
    for account, day in account_days:
        days.setdefault(account, []).append(day)
    return {account: contiguous_days(days[account]) for account in sorted(days)}
