"""Partitions of the Facebook insights assets."""

from __future__ import annotations

import os

import dagster as dg

# The first day insights may be backfilled from; override for older accounts.
INSIGHTS_START_DATE = os.environ.get("CRM_INSIGHTS_START_DATE", "2025-01-01")

# end_offset=1 adds today's partition: the hourly run refreshes today while it is still going.
insights_daily_partitions = dg.DailyPartitionsDefinition(
    start_date=INSIGHTS_START_DATE, end_offset=1
)
