"""Progress of the long commands: plain lines off a terminal (never a control code), said once."""

import io

import pytest

from crm_pipeline import progress as progress_module
from crm_pipeline.progress import Progress, is_terminal


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_a_pipe_or_a_file_is_not_a_terminal():
    assert not is_terminal(io.StringIO())


def test_plain_lines_every_tenth_or_interval_with_rate_and_eta(clock):
    out = io.StringIO()
    with Progress("sync", unit="account-days", out=out, every=30) as shown:
        shown.set_total(20)
        clock.now += 1
        shown.advance(1, rows=100)  # 5%: no line yet (not a tenth, not 30 s)
        clock.now += 1
        shown.advance(1, rows=100)  # 10%: a line
        clock.now += 40
        shown.refresh()  # nothing new, but 30 s passed: a line
        clock.now += 8
        shown.advance(18, rows=1800)
    lines = out.getvalue().splitlines()
    assert lines[0] == "sync: 2/20 account-days (10%), 200 rows, 100 rows/s, eta 0:00:18, 2.0s"
    assert lines[1] == "sync: 2/20 account-days (10%), 200 rows, 5 rows/s, eta 0:06:18, 42.0s"
    assert lines[-1] == "sync: 20/20 account-days (100%), 2,000 rows, 40 rows/s, 50.0s, done"
    assert "\x1b" not in out.getvalue()


def test_items_have_their_own_rows_and_rate_and_a_line_when_they_end(clock):
    out = io.StringIO()
    with Progress("clone", unit="tables", total=2, out=out, every=1000) as shown:
        with shown.step("customers"):
            clock.now += 2
            shown.item_rows(50_000)
        with shown.step("orders"):
            clock.now += 1
            shown.item_rows(1_000)
    assert out.getvalue().splitlines() == [
        "clone customers: 1/2 tables (50%), 50,000 rows, 25,000 rows/s, 2.0s, done",
        "clone orders: 2/2 tables (100%), 1,000 rows, 1,000 rows/s, 1.0s, done",
        "clone: 2/2 tables (100%), 3.0s, done",
    ]


def test_a_failed_step_is_not_counted_and_the_end_says_stopped(clock):
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("erase", unit="steps", total=4, out=out) as shown:
        with shown.step("database"):
            pass
        with shown.step("raw files"):
            raise RuntimeError("disk full")
    assert out.getvalue().splitlines() == [
        "erase database: 1/4 steps (25%), 0.0s, done",
        "erase: 1/4 steps (25%), 0.0s, stopped",
    ]


def test_no_stream_prints_nothing():
    with Progress("sync", unit="account-days", out=None) as shown:
        shown.set_total(3)
        shown.advance(3, rows=10)
        with shown.step("x"):
            shown.item_rows(5)


def test_the_bar_shows_the_same_text_and_ends_full():
    out = io.StringIO()
    with Progress("sync", unit="account-days", out=out, interactive=True) as shown:
        shown.set_total(4)
        shown.advance(4, rows=12)
    assert "sync: 4/4 account-days (100%), 12 rows" in out.getvalue()
