"""The sync's progress: account-days landed and their rows, read from the insights runs' events."""

import io
from types import SimpleNamespace

import dagster as dg
from graph_emulator import EmulatorData, GraphEmulator

from crm_pipeline import orchestrate, sync_progress
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.progress import Progress
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import ACCOUNTS, DAYS, resources_for


def test_a_sync_shows_every_account_day_and_row_it_lands(clean_db, database_url, dirs, monkeypatch):
    monkeypatch.setattr(sync_progress, "POLL_SECONDS", 0.05)  # poll inside the runs too
    instance = dg.DagsterInstance.ephemeral()
    out = io.StringIO()
    with (
        GraphEmulator(EmulatorData()) as server,
        Progress("sync", unit="account-days", out=out, every=0) as shown,
    ):
        report = orchestrate.sync_facebook(
            DAYS,
            resources=resources_for(database_url, server.url, dirs),
            instance=instance,
            database_url=database_url,
            refresh_caches=False,
            progress=shown,
        )
    lines = out.getvalue().splitlines()
    total = len(ACCOUNTS) * len(DAYS)
    assert lines[-1].startswith(
        f"sync: {total}/{total} account-days (100%), {report.insight_rows:,} rows, "
    )
    assert lines[-1].endswith(", done") and "\x1b" not in out.getvalue()
    # The raw step's log line per window is what moves the bar while the step runs: its
    # wording is what the watcher reads.
    logs = [
        e.user_message
        for run in instance.get_runs()
        for e in instance.all_logs(run.run_id)
        if not e.is_dagster_event
    ]
    windows = [m for m in logs if sync_progress._WINDOW_LOG.fullmatch(m.strip())]
    assert len(windows) == len(ACCOUNTS)  # each account's two days: one window


def _watcher(todo) -> tuple[sync_progress._Watcher, io.StringIO]:
    out = io.StringIO()
    shown = Progress("sync", unit="account-days", total=len(todo), out=out, every=0)
    return sync_progress._Watcher(dg.DagsterInstance.ephemeral(), todo, shown), out


def test_a_window_counts_its_days_once_and_the_events_add_only_what_it_missed():
    keys = {str(insights_partition_key(a, d)) for a in ACCOUNTS for d in DAYS}
    watcher, out = _watcher(keys)
    log = SimpleNamespace(
        dagster_event=None, user_message=f"12 insight rows for act_1001 {DAYS[0]}..{DAYS[1]}"
    )
    watcher._see(log)
    watcher._see(log)  # the same line read twice (a poll repeated): counted once
    assert watcher.seen == {str(insights_partition_key("act_1001", d)) for d in DAYS}
    assert out.getvalue().splitlines()[-1].startswith("sync: 2/4 account-days (50%), 12 rows")
    for account, day, rows in (("act_1001", DAYS[0], 6), ("act_1002", DAYS[1], 5)):
        watcher._see(_materialization(account, day, rows))
    assert out.getvalue().splitlines()[-1].startswith("sync: 3/4 account-days (75%), 17 rows")


def _materialization(account: str, day: str, rows: int) -> SimpleNamespace:
    event = SimpleNamespace(
        event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
        event_specific_data=SimpleNamespace(
            materialization=dg.AssetMaterialization(
                asset_key="fb_ad_insights_raw",
                partition=str(insights_partition_key(account, day)),
                metadata={"rows": rows},
            )
        ),
    )
    return SimpleNamespace(dagster_event=event, user_message="")
