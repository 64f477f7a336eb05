"""How far a `crm-pipeline sync facebook` is: account-days landed, read from the runs' events.

The insights runs execute in this process, but their steps report to the Dagster instance, not
to us, so a thread polls the instance's event log of the sync's runs (one runs query and one
query per unfinished run, from its cursor, every `POLL_SECONDS`) and counts account-days:

- while the raw step works, each window it lands logs `N insight rows for <account>
  <since>..<until>` (an account's consecutive days, landed at once): those days and rows;
- when the step ends, one `fb_ad_insights_raw` materialisation per account-day (with its
  `rows`): whatever the log lines did not cover (their wording may change; these events are the
  record).

Dagster-side, so it lives outside the Dagster-free core; `crm_pipeline.progress` shows it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import dagster as dg

from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.progress import Progress

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
CLI_RUN_TAGS = {"crm/trigger": "cli"}  # what `orchestrate._run` tags every run with
_WINDOW_LOG = re.compile(r"(\d+) insight rows for (\S+) (\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})")
_RAW = fb_ad_insights_raw.key


@contextmanager
def watch_insight_runs(
    instance: dg.DagsterInstance, todo: set[str], progress: Progress | None
) -> Iterator[None]:
    """Show the account-days of `todo` (insights partition keys) as the runs started inside
    the block land them; nothing when `progress` is None."""
    if progress is None or not todo:
        yield
        return
    progress.set_total(len(todo))
    watcher = _Watcher(instance, todo, progress)
    thread = threading.Thread(target=watcher.run, name="sync-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        watcher.stopped.set()
        thread.join()
        watcher.poll_quietly()  # the events of the last run's end


class _Watcher:
    """Counts the account-days of `todo` seen landed in the sync's runs."""

    def __init__(self, instance: dg.DagsterInstance, todo: set[str], progress: Progress) -> None:
        self.instance, self.todo, self.progress = instance, todo, progress
        self.seen: set[str] = set()
        self.cursors: dict[str, str | None] = {}
        self.finished: set[str] = set()
        # Runs of this sync only: created from now on (a second past, for clock rounding).
        self.since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        self.stopped = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        while not self.stopped.wait(POLL_SECONDS):
            self.poll_quietly()

    def poll_quietly(self) -> None:
        """`poll`, skipping a failure: the display is not worth failing a sync for."""
        try:
            self.poll()
        except Exception:  # e.g. SQLite busy while the run writes: the next poll catches up
            log.debug("sync progress: a poll of the instance failed", exc_info=True)

    def poll(self) -> None:
        """Read the new events of the sync's unfinished runs."""
        runs = self.instance.get_runs(dg.RunsFilter(tags=CLI_RUN_TAGS, created_after=self.since))
        for run in runs:
            if run.run_id in self.finished:
                continue
            page = self.instance.event_log_storage.get_records_for_run(
                run.run_id, cursor=self.cursors.get(run.run_id)
            )
            for record in page.records:
                self._see(record.event_log_entry)
            self.cursors[run.run_id] = page.cursor
            if run.is_finished:  # read after it finished: its events are all in
                self.finished.add(run.run_id)
        self.progress.refresh()

    def _see(self, entry) -> None:
        event = entry.dagster_event
        if event is None:
            match = _WINDOW_LOG.fullmatch(entry.user_message.strip())
            if match:
                rows, account, since, until = match.groups()
                self._landed([(account, day) for day in _days(since, until)], int(rows))
            return
        if event.event_type != dg.DagsterEventType.ASSET_MATERIALIZATION:
            return
        materialization = event.event_specific_data.materialization
        if materialization.asset_key != _RAW or materialization.partition is None:
            return
        rows = materialization.metadata.get("rows")
        key = str(materialization.partition)
        if key in self.todo and key not in self.seen:
            self.seen.add(key)
            self.progress.advance(1, rows=int(rows.value) if rows is not None else 0)

    def _landed(self, account_days: Iterable[tuple[str, str]], rows: int) -> None:
        keys = {str(insights_partition_key(account, day)) for account, day in account_days}
        new = (keys & self.todo) - self.seen
        if new:
            self.seen |= new
            self.progress.advance(len(new), rows=rows)


def _days(since: str, until: str) -> list[str]:
    first, last = dt.date.fromisoformat(since), dt.date.fromisoformat(until)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
