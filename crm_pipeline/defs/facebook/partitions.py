"""Partitions of the Facebook insights assets: one per day and ad account."""

import os

import dagster as dg

from crm_pipeline.config import load_settings

# The first day insights may be backfilled from; override for older accounts.
INSIGHTS_START_DATE = os.environ.get("CRM_INSIGHTS_START_DATE", "2025-01-01")


def configured_account_ids() -> list[str]:
    """`FB_AD_ACCOUNT_IDS`, or the bundled emulator's accounts when none are configured."""
    accounts = load_settings().ad_account_ids
    if accounts:
        return list(accounts)
    from crm_pipeline.facebook.emulator.data import EmulatorData

    return list(EmulatorData().account_ids)


# end_offset=1 adds today's partition: the hourly run refreshes today while it is still going.
daily_partitions = dg.DailyPartitionsDefinition(start_date=INSIGHTS_START_DATE, end_offset=1)
account_partitions = dg.StaticPartitionsDefinition(configured_account_ids())

insights_partitions = dg.MultiPartitionsDefinition(
    {"date": daily_partitions, "account": account_partitions}
)


def insights_partition_key(account_id: str, day: str) -> dg.MultiPartitionKey:
    """The partition key of one account and day."""
    return dg.MultiPartitionKey({"date": day, "account": account_id})
