"""Progress of the long commands (`sync facebook`, `clone-db`, `privacy erase`, `demo`), said once.

On a terminal, a rich progress bar on stderr. Anywhere else (CI logs, pipes, a file, a test's
StringIO) plain lines, never a control code: one when an item (a table, a step) ends, one at
the end, and in between at most one every `PLAIN_EVERY_SECONDS` unless another tenth of the
work was done. stdout is left alone: the commands print their results there, and scripts and
tests read it.

A `Progress` counts `done` of `total` units (account-days, tables, steps), optionally rows, and
an optional current item with its own rows and rate (the table being copied). Every method is
safe to call from another thread (the sync's event poller) and does nothing when `out` is None.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, TextIO

PLAIN_EVERY_SECONDS = 10.0


@dataclass
class _Figures:
    """What a progress shows; times are `time.monotonic()` seconds."""

    started: float
    done: int = 0
    total: int | None = None
    rows: int | None = None
    item: str | None = None
    item_rows: int | None = None
    item_started: float = 0.0
    state: str | None = None  # "done" or "stopped": the item (or, without one, the whole) ended


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def describe(name: str, unit: str, f: _Figures, now: float, *, elapsed: bool = True) -> str:
    """The one line a progress shows: `name [item]: done/total unit (pct), rows, rate, eta`.

    Rows and their rate are the current item's when there is one (a table's copy), else the
    whole command's (a sync's). The bar shows the same text, without the elapsed time (rich
    shows a live clock instead).
    """
    parts = []
    if f.total:
        parts.append(f"{f.done}/{f.total} {unit} ({100 * f.done / f.total:.0f}%)")
    elif f.done:
        parts.append(f"{f.done} {unit}")
    in_item = f.item is not None
    rows = f.item_rows if in_item else f.rows
    seconds = now - (f.item_started if in_item else f.started)
    if rows is not None:
        parts.append(f"{rows:,} rows")
        if seconds > 0:
            parts.append(f"{rows / seconds:,.0f} rows/s")
    whole = now - f.started
    if f.total and 0 < f.done < f.total and not in_item and not f.state:
        parts.append(f"eta {_clock(whole * (f.total - f.done) / f.done)}")
    if elapsed:
        parts.append(f"{seconds if in_item else whole:.1f}s")
    if f.state:
        parts.append(f.state)
    title = f"{name} {f.item}" if in_item else name
    return f"{title}: {', '.join(parts)}" if parts else title


def is_terminal(out: TextIO) -> bool:
    """Whether `out` is an interactive terminal that can redraw a bar (not a dumb one)."""
    try:
        if not out.isatty():
            return False
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False
    from rich.console import Console

    console = Console(file=out)
    return console.is_terminal and not console.is_dumb_terminal


class Progress:
    """One command's progress on `out` (stderr by default); a bar on a terminal, else lines."""

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        total: int | None = None,
        out: TextIO | None | Literal["stderr"] = "stderr",
        interactive: bool | None = None,
        every: float = PLAIN_EVERY_SECONDS,
    ) -> None:
        # sys.stderr as it is now, not at import (tests and wrappers replace it).
        out = sys.stderr if out == "stderr" else out
        self.name, self.unit, self.out, self.every = name, unit, out, every
        self._f = _Figures(started=time.monotonic(), total=total)
        self._lock = threading.RLock()
        self._last_line = self._f.started
        self._last_tenth = 0
        self._bar: _Bar | None = None
        self._closed = False
        if out is not None and (is_terminal(out) if interactive is None else interactive):
            self._bar = _Bar(out, name)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)

    def set_total(self, total: int | None) -> None:
        """The number of units to do, once it is known."""
        with self._lock:
            self._f.total = total
            self._show()

    def advance(self, done: int = 1, *, rows: int = 0) -> None:
        """`done` more units finished, bringing `rows` more rows."""
        with self._lock:
            self._f.done += done
            if rows or self._f.rows is not None:
                self._f.rows = (self._f.rows or 0) + rows
            self._show()

    def begin(self, item: str) -> None:
        """A new current item (a table, a step): its own rows and rate from now on."""
        with self._lock:
            self._f.item, self._f.item_rows = item, None
            self._f.item_started = time.monotonic()
            self._show()

    def item_rows(self, rows: int) -> None:
        """Rows of the current item so far."""
        with self._lock:
            self._f.item_rows = rows
            self._show()

    def end_item(self, done: int = 1) -> None:
        """The current item finished: `done` more units; a plain line says so."""
        with self._lock:
            self._f.done += done
            self._f.state = "done"
            self._show(line=True)
            self._f.state, self._f.item, self._f.item_rows = None, None, None

    @contextmanager
    def step(self, item: str, done: int = 1) -> Iterator[Progress]:
        """`item` is the current one inside the block, and counts `done` units when it ends
        without an error."""
        self.begin(item)
        yield self
        self.end_item(done)

    def refresh(self) -> None:
        """Redraw (a plain line only when one is due): for callers that poll."""
        with self._lock:
            self._show()

    def close(self, *, ok: bool = True) -> None:
        """Stop the bar, or print the last line (`done` only when `ok`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._f.item = None
            self._f.state = "done" if ok else "stopped"
            if self._bar is not None:
                self._bar.show(self._f, self.unit, ok)
                self._bar.stop()
            elif self.out is not None:
                self._print()

    def _show(self, *, line: bool = False) -> None:
        if self.out is None or self._closed:
            return
        if self._bar is not None:
            self._bar.show(self._f, self.unit, None)
            return
        now = time.monotonic()
        tenth = math.floor(10 * self._f.done / self._f.total) if self._f.total else 0
        if line or tenth > self._last_tenth or now - self._last_line >= self.every:
            self._last_tenth = max(tenth, self._last_tenth)
            self._print(now)

    def _print(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_line = now
        print(describe(self.name, self.unit, self._f, now), file=self.out, flush=True)


@dataclass
class _Bar:
    """The rich bar of a terminal: the same text as a plain line, a bar and a live clock."""

    out: TextIO
    name: str
    _progress: object = field(init=False)
    _task: int = field(init=False)

    def __post_init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(file=self.out),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.name, total=None)

    def show(self, figures: _Figures, unit: str, ok: bool | None) -> None:
        """Redraw with `figures`; `ok` is set once, at the end."""
        text = describe(self.name, unit, figures, time.monotonic(), elapsed=False)
        total = figures.total
        if ok and total is None:
            total = max(figures.done, 1)  # an open-ended count: a full bar at the end
        completed = total if ok and total is not None else figures.done
        self._progress.update(self._task, description=text, completed=completed, total=total)

    def stop(self) -> None:
        """Leave the last state on screen."""
        self._progress.stop()
