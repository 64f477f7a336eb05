"""DaySplit: checking a window's rows a page at a time gives exactly what checking them all at
once gives (the per-day files and quarantine of a window must not depend on the page size)."""

import random

import pytest
from graph_emulator import EmulatorData

from crm_pipeline.defs.facebook.assets import check_insight_day
from crm_pipeline.defs.facebook.insight_windows import DaySplit, chunks, split_by_day
from crm_pipeline.facebook.fields import INSIGHT_FIELDS
from crm_pipeline.facebook.transforms import to_arrow

DAYS = ["2026-10-01", "2026-10-02", "2026-10-03"]


def window_rows() -> list[dict]:
    """Three days of an account's rows, shuffled, with odd ones: no ad id, a spend that is not
    a number, a day outside the window and no date at all (those two belong to no one day)."""
    import datetime as dt

    rows = EmulatorData(seed=3).insights(
        "act_1001", dt.date.fromisoformat(DAYS[0]), dt.date.fromisoformat(DAYS[-1])
    )
    rows[1] = {**rows[1], "ad_id": ""}
    rows[5] = {**rows[5], "spend": "lots"}
    rows[7] = {**rows[7], "date_start": "2026-09-30"}
    rows[9] = {k: v for k, v in rows[9].items() if k != "date_start"}
    random.Random(5).shuffle(rows)
    return rows


def convert(good: list[dict]):
    return to_arrow(good, INSIGHT_FIELDS)


@pytest.mark.parametrize("page", [1, 3, 7, 500])
def test_a_window_checked_a_page_at_a_time_equals_checking_it_whole(page):
    rows = window_rows()
    whole = split_by_day(rows, DAYS, check_insight_day)
    split = DaySplit(DAYS, check_insight_day, convert)
    for chunk in chunks(iter(rows), page):
        assert len(chunk) <= page
        split.add(chunk)
    assert split.rows == len(rows)
    for day in DAYS:
        assert split.good(day).equals(convert(whole[day].good)), day
        assert split.bad[day] == whole[day].bad, day
    # The odd rows were found, and the two with no day are quarantined in every day.
    assert all(len(split.bad[day]) >= 2 for day in DAYS)


def test_a_window_without_rows_lands_empty_days():
    split = DaySplit(DAYS, check_insight_day, convert)
    for chunk in chunks(iter([]), 500):
        split.add(chunk)
    assert split.rows == 0
    assert all(split.good(day).num_rows == 0 and split.bad[day] == [] for day in DAYS)
    assert split.good(DAYS[0]).schema == convert([]).schema
