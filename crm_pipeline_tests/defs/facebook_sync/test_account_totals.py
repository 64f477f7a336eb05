"""Meta's account totals beside the ad rows: landed as raw/fb_account_insights, loaded into
ad_account_insights_daily, and the `matches_account_totals` check that compares them."""

import datetime as dt
from decimal import Decimal

import dagster as dg
import orjson
import pyarrow.parquet as pq
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.db.insight_totals import differing_totals
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.crm.insight_totals import account_totals_result
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.facebook.fields import ACCOUNT_INSIGHT_FIELDS
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    is_account_totals,
    range_run,
    resources_for,
)

ACCOUNT = "act_1001"
DAYS = ["2026-10-05", "2026-10-06", "2026-10-07"]


def _totals_check(result: dg.ExecuteInProcessResult):
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "matches_account_totals"
    ]
    return check


def _sums(data: EmulatorData, day: str) -> tuple[str, str, Decimal, int, int]:
    """Meta's ad rows of one day summed here, independently of the emulator's account level."""
    rows = data.insights(ACCOUNT, dt.date.fromisoformat(day), dt.date.fromisoformat(day))
    return (
        ACCOUNT.removeprefix("act_"),
        day,
        sum((Decimal(r["spend"]) for r in rows), Decimal(0)),
        sum(int(r["impressions"]) for r in rows),
        sum(int(r["clicks"]) for r in rows),
    )


def test_a_clean_sync_lands_the_totals_and_they_match(clean_db, database_url, dirs):
    data = EmulatorData()
    with GraphEmulator(data) as server:
        result = range_run(resources_for(database_url, server.url, dirs), ACCOUNT, *DAYS[::2])
        totals_reads = [r for r in server.requests if is_account_totals(r)]
    assert result.success
    # One account-level query for the run's window, with the same range and status filter.
    [read] = totals_reads
    assert read.params["fields"] == ",".join(ACCOUNT_INSIGHT_FIELDS)
    assert orjson.loads(read.params["time_range"]) == {"since": DAYS[0], "until": DAYS[-1]}
    assert orjson.loads(read.params["filtering"])[0]["field"] == "ad.effective_status"
    for day in DAYS:
        path = lake.raw_path(dirs["data"], "fb_account_insights", f"account={ACCOUNT}/date={day}")
        table = pq.read_table(path)
        assert tuple(table.column_names) == ACCOUNT_INSIGHT_FIELDS and table.num_rows == 1
    with clean_db.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT account_id, date::text, spend, impressions, clicks"
                " FROM ad_account_insights_daily ORDER BY date"
            )
        ).all()
    assert [tuple(r) for r in stored] == [_sums(data, day) for day in DAYS]
    check = _totals_check(result)
    assert check.passed
    assert check.metadata["compared_account_days"].value == len(DAYS)
    assert check.metadata["differences"].value == []


def test_the_check_fails_naming_the_day_whose_ad_rows_do_not_add_up(clean_db, database_url, dirs):
    """A row lost between Meta and the table: the day's ad rows no longer add up."""
    data = EmulatorData()
    with GraphEmulator(data) as server:
        resources = resources_for(database_url, server.url, dirs)
        assert _totals_check(range_run(resources, ACCOUNT, DAYS[0], DAYS[-1])).passed
    # The middle day's landed ad rows lose one row; Meta's account totals still count it.
    day = DAYS[1]
    partition = f"account={ACCOUNT}/date={day}"
    landed = lake.read_partition(dirs["data"], "fb_ad_insights", partition)
    lost = landed.to_pylist()[0]
    lake.land_partition(dirs["data"], "fb_ad_insights", partition, landed.slice(1))
    result = dg.materialize(
        [ad_insights_daily],
        partition_key=str(insights_partition_key(ACCOUNT, day)),
        resources=resources,
    )
    assert result.success  # the load itself worked; the check says the numbers are wrong
    check = _totals_check(result)
    assert not check.passed
    assert day in check.description and ACCOUNT in check.description
    assert check.metadata["days"].value == [day]
    assert check.metadata["accounts"].value == [ACCOUNT]
    [difference] = check.metadata["differences"].value
    _, _, spend, impressions, clicks = _sums(data, day)
    assert difference["date"] == day and difference["account"] == ACCOUNT
    assert Decimal(difference["spend"]["meta"]) == spend
    assert Decimal(difference["spend"]["ours"]) == spend - Decimal(lost["spend"])
    assert difference["impressions"] == {
        "meta": impressions,
        "ours": impressions - int(lost["impressions"]),
    }
    assert difference["clicks"] == {"meta": clicks, "ours": clicks - int(lost["clicks"])}


def test_an_edited_ad_row_is_caught_to_the_cent(clean_db, database_url, dirs):
    """A row edited in the table after a sync (by hand, by another app): re-running the
    comparison names that day, a cent off is enough, and the other days still match."""
    with GraphEmulator(EmulatorData()) as server:
        resources = resources_for(database_url, server.url, dirs)
        assert _totals_check(range_run(resources, ACCOUNT, DAYS[0], DAYS[-1])).passed
    account_days = [(ACCOUNT.removeprefix("act_"), day) for day in DAYS]
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "UPDATE ad_insights_daily SET spend = spend + 0.01 WHERE ad_id ="
                " (SELECT min(ad_id) FROM ad_insights_daily WHERE date = :day) AND date = :day"
            ),
            {"day": DAYS[2]},
        )
    with clean_db.connect() as conn:
        [difference] = differing_totals(conn, account_days)
        check = account_totals_result(conn, account_days, [])
    assert difference.date.isoformat() == DAYS[2]
    assert difference.our_spend - difference.meta_spend == Decimal("0.01")
    assert difference.our_impressions == difference.meta_impressions
    assert not check.passed and DAYS[2] in check.description
    assert check.metadata["days"].value == [DAYS[2]]

    # A deleted ad row: impressions and clicks are short too.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM ad_insights_daily WHERE date = :day AND ad_id ="
                " (SELECT max(ad_id) FROM ad_insights_daily WHERE date = :day)"
            ),
            {"day": DAYS[0]},
        )
    with clean_db.connect() as conn:
        differences = differing_totals(conn, account_days)
    assert [d.date.isoformat() for d in differences] == [DAYS[0], DAYS[2]]
    assert differences[0].our_impressions < differences[0].meta_impressions
