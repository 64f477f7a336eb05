"""Running the asset graph from the command line (demo, `crm-pipeline sync`) through Dagster.

Runs go through `dagster.materialize` on a real Dagster instance, so they appear in the UI's
run history and asset catalog exactly like scheduled runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import yaml
from dagster_postgres import PostgresEventLogStorage
from sqlalchemy.engine import Engine

from crm_pipeline.config import Settings, load_settings
from crm_pipeline.db.engine import get_engine
from crm_pipeline.db.schema import sync_state
from crm_pipeline.db.sync_state import get_state, put_state
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import (
    INSIGHTS_START_DATE,
    account_blocks,
    accounts_partition_range,
    contiguous_days,
    insights_partition_key,
    insights_partitions,
    partition_range_tags,
    partitioned_account_ids,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.defs.sync_schedules import INSIGHT_ASSETS, STREAM_ASSETS
from crm_pipeline.local_emulator import emulator_for
from crm_pipeline.progress import Progress
from crm_pipeline.sync_progress import watch_insight_runs

log = logging.getLogger(__name__)

# The checkout's instance config: local storage, the production queue, pools and retention.
REPO_INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"
# Local instances written by earlier versions name this storage class, which is gone: rewritten.
RETIRED_STORAGE_MODULE = "crm_pipeline.dagster_storage"

CHECKPOINT_STREAM = "cli_insights_sync"
# Event-level DEBUG lines belong in the UI's run view, not on the terminal.
STREAMS_RUN = "facebook streams sync"
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class RunFailed(RuntimeError):
    """A Dagster run of ours did not succeed; the message names the run and the failed step."""


@dataclass
class SyncReport:
    """What a sync did: per-day metadata of the raw and DB assets, and the cache metadata."""

    days: list[str] = field(default_factory=list)
    insight_rows: int = 0
    inserted: int = 0
    updated: int = 0
    api_calls: int = 0
    resumed: int = 0  # account-days skipped because a previous run had finished them
    cache_files: dict[str, str] = field(default_factory=dict)


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """`$DAGSTER_HOME`'s instance, or a persistent local one under `CRM_DATA_DIR/dagster`.

    The local one is what `make ui` opens, so the demo's runs show up in the UI.
    """
    os.environ["DAGSTER_HOME"] = str(instance_home(settings))
    return dg.DagsterInstance.get()


def instance_home(settings: Settings) -> Path:
    """`DAGSTER_HOME`, or `CRM_DATA_DIR/dagster` holding a local copy of the repo's `dagster.yaml`.

    The copy gives the local instance the production run queue, pools and retention, with
    Dagster's local storage in that folder. An existing `dagster.yaml` there is left as the user
    edited it, unless it names the storage class earlier versions wrote (it cannot load now).
    """
    if settings.dagster_home:
        return settings.dagster_home.resolve()
    home = (settings.data_dir / "dagster").resolve()
    if settings.dagster_pg_url:
        log.warning(
            "DAGSTER_PG_URL is set but DAGSTER_HOME is not: runs go to the local instance in %s; "
            "point DAGSTER_HOME at a folder holding the repo-root dagster.yaml for PostgreSQL",
            home,
        )
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or RETIRED_STORAGE_MODULE in config.read_text():
        config.write_text(local_instance_config())
    return home


def local_instance_config() -> str:
    """The repo's `dagster.yaml` without any storage block: Dagster then keeps runs, events and
    ticks in its local storage under `DAGSTER_HOME`, with nothing to set up."""
    if not REPO_INSTANCE_CONFIG.exists():  # installed without the repository around it
        return "telemetry:\n  enabled: false\n"
    instance = yaml.safe_load(REPO_INSTANCE_CONFIG.read_text())
    for key in ("storage", "run_storage", "event_log_storage", "schedule_storage"):
        instance.pop(key, None)
    return (
        f"# Written by crm-pipeline from {REPO_INSTANCE_CONFIG}; edit freely.\n"
        + yaml.safe_dump(instance, sort_keys=False)
    )


@contextmanager
def graph_resource(settings: Settings) -> Iterator[GraphApiResource]:
    """The Graph API resource for one command's runs.

    With `FB_GRAPH_URL=emulator`, one emulator process serves every run of the call: the one
    the command started before loading the definitions (its URL, accounts and Page are in the
    environment, see `crm_pipeline.local_emulator`), else one started here for the call.
    Otherwise the resource reads Meta's credentials from the environment at run time, and
    refuses to run without them.
    """
    with ExitStack() as stack:
        if settings.uses_emulator:
            emulator = stack.enter_context(emulator_for(settings))
            yield GraphApiResource(
                graph_url=emulator.url,
                ad_account_ids=",".join(emulator.ad_account_ids),
                page_id=emulator.page_id,
            )
        else:
            yield GraphApiResource()


def _check(result: dg.ExecuteInProcessResult, what: str) -> dg.ExecuteInProcessResult:
    if not result.success:
        failures = [
            f"{e.step_key}: {_root_message(e.event_specific_data.error)}"
            for e in result.all_events
            if e.is_step_failure and e.event_specific_data and e.event_specific_data.error
        ]
        raise RunFailed(f"{what} failed (run {result.run_id}): " + "; ".join(failures))
    return result


def _root_message(error) -> str:
    """The innermost cause of a step failure: the error the user can act on."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def _metadata(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    """Metadata of the asset's (first) materialisation in `result`."""
    events = result.asset_materializations_for_node(asset.op.name)
    return {k: v.value for k, v in events[0].metadata.items()} if events else {}


def days_between(since: dt.date, until: dt.date) -> list[str]:
    """Partition keys from `since` to `until`, inclusive."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    return [(since + dt.timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]


def sync_facebook(
    days: list[str],
    *,
    resources: dict,
    instance: dg.DagsterInstance,
    database_url: str,
    refresh_caches: bool = True,
    progress: Progress | None = None,
) -> SyncReport:
    """The incremental streams once (beside the insights on a PostgreSQL instance), insights in
    one run over every account, then the caches.

    Every account's days run as one Dagster run over the partition range (accounts × days: one
    step per asset, the accounts read at once, each account's days with one /insights query),
    or one run per stretch of consecutive days when some are already done.
    Finished account-days are checkpointed in `sync_state` under this range: when a run ends
    early (a rate-limit wait past the budget, a crash), the same command resumes where it
    stopped without fetching the finished days again. A run's days are checkpointed together
    once it has succeeded, so a failed run leaves all of them to do. The checkpoint is cleared
    at the end. `progress` shows the account-days landed of those to do (`sync_progress`).
    """
    report = SyncReport(days=days)
    # FB_AD_ACCOUNT_IDS when set (it may narrow a sync), else the loaded partitions' accounts.
    accounts = list(load_settings().ad_account_ids) or partitioned_account_ids()
    _check_partitions(accounts, days)
    checkpoint = _Checkpoint(
        get_engine(database_url), f"{days[0]}..{days[-1]}|{','.join(accounts)}"
    )
    done = checkpoint.load()
    report.resumed = len(done)
    todo = {str(insights_partition_key(a, d)) for a in accounts for d in days} - done

    with (
        _planned_events_per_asset(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams-run") as pool,
    ):
        streams = _start_streams(pool, resources, instance)
        try:
            with watch_insight_runs(instance, todo, progress):
                _sync_insight_runs(accounts, days, done, checkpoint, report, resources, instance)
        except BaseException:
            _streams_result(streams, quiet=True)
            raise
        result = _streams_result(streams)
    report.api_calls += sum(_metadata(result, a).get("api_calls", 0) for a in STREAM_ASSETS)
    checkpoint.clear()
    if refresh_caches:
        report.cache_files = refresh_cache_files(resources=resources, instance=instance)
    return report


def _sync_insight_runs(
    accounts: list[str],
    days: list[str],
    done: set[str],
    checkpoint: _Checkpoint,
    report: SyncReport,
    resources: dict,
    instance: dg.DagsterInstance,
) -> None:
    """The sync's insights runs (:func:`_insight_runs`), each checkpointed once it succeeded."""
    for group, run_days in _insight_runs(accounts, days, done):
        try:
            _sync_insights(group, run_days, report, resources=resources, instance=instance)
        except RunFailed:
            if len(group) == 1:
                raise
            # One account failing fails the run of all (Dagster cannot fail part of a ranged
            # run): each account alone then, so the others still land and are checkpointed.
            _sync_each_alone(group, run_days, report, done, checkpoint, resources, instance)
            continue
        done.update(str(insights_partition_key(a, day)) for a in group for day in run_days)
        checkpoint.save(done)


def _start_streams(
    pool: ThreadPoolExecutor, resources: dict, instance: dg.DagsterInstance
) -> Future:
    """The streams run, started beside the insights runs when the instance can take two runs
    at once (PostgreSQL storage, as in production); on Dagster's local SQLite storage, which
    locks against a second writer, it runs first, here, and a failure raises at once."""
    if isinstance(instance.event_log_storage, PostgresEventLogStorage):
        # The streams share nothing with the insights; the governors keep both within Meta's
        # limits together, as for the hourly schedule's runs.
        return pool.submit(_run, STREAM_ASSETS, None, resources, instance, STREAMS_RUN)
    done: Future = Future()
    done.set_result(_run(STREAM_ASSETS, None, resources, instance, STREAMS_RUN))
    return done


def _streams_result(streams: Future, *, quiet: bool = False) -> dg.ExecuteInProcessResult | None:
    """The streams run's result, once it has ended; with `quiet` its failure is logged rather
    than raised (another error is on its way)."""
    try:
        return streams.result()
    except RunFailed:
        if not quiet:
            raise
        log.error("the streams run failed too", exc_info=True)
        return None


def _insight_runs(
    accounts: list[str], days: list[str], done: set[str]
) -> Iterator[tuple[list[str], list[str]]]:
    """The insights runs of a sync: `(accounts, consecutive days)`, each one partition range.

    Every account with the same days to do, neighbours in the partitions' order, runs
    together: a fresh sync is one run over all accounts × all days (the accounts read at
    once). A resumed one runs what its checkpoint left, in as few ranges as that allows.
    """
    todo = {
        account: [d for d in days if str(insights_partition_key(account, d)) not in done]
        for account in accounts
    }
    for block in account_blocks(accounts):
        group: list[str] = []
        for account in [*block, None]:  # None flushes the last group
            if group and (account is None or todo[account] != todo[group[0]]):
                for run_days in contiguous_days(todo[group[0]]):
                    yield group, run_days
                group = []
            if account is not None:
                group.append(account)


def _sync_each_alone(
    group: list[str], run_days: list[str], report, done: set[str], checkpoint, resources, instance
) -> None:
    """An insights run per account of `group`, checkpointing each that succeeds; raises the
    first failure once every account has had its run."""
    failure: RunFailed | None = None
    for account in group:
        try:
            _sync_insights([account], run_days, report, resources=resources, instance=instance)
        except RunFailed as exc:
            failure = failure or exc
            continue
        done.update(str(insights_partition_key(account, day)) for day in run_days)
        checkpoint.save(done)
    if failure is not None:
        raise failure


def _sync_insights(
    accounts: list[str], run_days: list[str], report: SyncReport, *, resources, instance
) -> None:
    """One insights run over neighbouring accounts' consecutive days; its counts go into
    `report`."""
    names = accounts[0] if len(accounts) == 1 else f"{accounts[0]}..{accounts[-1]}"
    what = f"insights sync for {names} {run_days[0]}" + (
        f"..{run_days[-1]}" if len(run_days) > 1 else ""
    )
    result = _run(
        INSIGHT_ASSETS,  # the built-in insights and every custom insights entry
        accounts_partition_range(accounts, run_days[0], run_days[-1]),
        resources,
        instance,
        what,
    )
    # The API usage is the run's, on every partition's event: count it once.
    report.api_calls += _metadata(result, fb_ad_insights_raw).get("api_calls", 0)
    db = _partition_totals(result, ad_insights_daily)
    report.insight_rows += db.get("rows", 0)
    report.inserted += db.get("inserted", 0)
    report.updated += db.get("updated", 0)


@dataclass(frozen=True)
class _Checkpoint:
    """The account-days one sync has finished, kept in `sync_state` under the sync's scope."""

    engine: Engine
    scope: str

    def load(self) -> set[str]:
        """The partition keys finished by earlier attempts of the same sync."""
        with self.engine.connect() as conn:
            return set(get_state(conn, CHECKPOINT_STREAM, self.scope).get("done", []))

    def save(self, done: set[str]) -> None:
        """Record `done` (committed at once: a crash after this does not redo them)."""
        with self.engine.begin() as conn:
            put_state(conn, CHECKPOINT_STREAM, self.scope, {"done": sorted(done)})

    def clear(self) -> None:
        """Forget the checkpoint: the sync is complete."""
        with self.engine.begin() as conn:
            conn.execute(
                sync_state.delete().where(
                    sync_state.c.stream == CHECKPOINT_STREAM, sync_state.c.scope == self.scope
                )
            )


def _check_partitions(accounts: list[str], days: list[str]) -> None:
    """Fail before any run when a day or account is not an insights partition."""
    for account in accounts:
        for day in (days[0], days[-1]):  # days are consecutive: the ends decide
            if not insights_partitions.has_partition_key(insights_partition_key(account, day)):
                raise ValueError(
                    f"{account} {day} is not an insights partition: days run from "
                    f"CRM_INSIGHTS_START_DATE ({INSIGHTS_START_DATE}) to today, accounts are "
                    f"those of FB_AD_ACCOUNT_IDS when Dagster loaded the definitions"
                )


def _partition_totals(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    """Numeric metadata summed over the asset's per-partition materialisations in `result`."""
    totals: dict[str, int] = {}
    for event in result.asset_materializations_for_node(asset.op.name):
        for name, entry in event.metadata.items():
            if isinstance(entry.value, int) and not isinstance(entry.value, bool):
                totals[name] = totals.get(name, 0) + entry.value
    return totals


def _run(
    assets, partitions: str | dg.PartitionKeyRange | None, resources, instance, what: str
) -> dg.ExecuteInProcessResult:
    """One in-process run; `partitions` is a key or a key range (a single-run backfill).

    `materialize` takes one partition key; Dagster 1.13 has no keyword for a range, so a range
    is given as the run tags Dagster reads for it (`partition_range_tags`).
    """
    tags = {"crm/trigger": "cli"}
    partition_key = partitions if isinstance(partitions, str) else None
    if isinstance(partitions, dg.PartitionKeyRange):
        if partitions.start == partitions.end:
            partition_key = partitions.start  # one day: an ordinary single-partition run
        else:
            tags.update(partition_range_tags(partitions))
    result = dg.materialize(
        assets,
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        tags=tags,
        run_config=_QUIET,
        raise_on_error=False,
    )
    return _check(result, what)


# Dagster's switch for one "planned" event per asset of a ranged run instead of one per
# partition (600 account-days: 1,200 event writes, 10 s on the local instance's SQLite storage,
# before the run starts). Its cost: partitions of a failed run show as missing, not failed, in
# the UI. The CLI reports a failed run itself and resumes from its checkpoint, so its runs use it;
# runs the daemon launches do not. A value the operator set wins.
_PLANNED_SUBSET_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def _planned_events_per_asset() -> Iterator[None]:
    """Set Dagster's one-planned-event-per-asset switch for the runs started inside (set once
    around a whole sync: its runs may start from two threads)."""
    if _PLANNED_SUBSET_ENV in os.environ:
        yield
        return
    os.environ[_PLANNED_SUBSET_ENV] = "true"
    try:
        yield
    finally:
        os.environ.pop(_PLANNED_SUBSET_ENV, None)


CACHE_ASSETS = (
    marketing_insights_cache,
    customer_index_cache,
    customer_profiles_cache,
    analytics_summary,
)


def refresh_cache_files(*, resources: dict, instance: dg.DagsterInstance) -> dict[str, str]:
    """Rebuild every cache file (all customer files too) in one run; return their paths."""
    result = _run(list(CACHE_ASSETS), None, resources, instance, "cache refresh")
    return {
        asset.key.to_user_string(): str(_metadata(result, asset)["path"]) for asset in CACHE_ASSETS
    }


def standard_resources(settings: Settings, graph_api: GraphApiResource) -> dict:
    """Resources for CLI runs: the environment's database and folders, the given Graph API."""
    return {
        "postgres": PostgresResource(database_url=settings.database_url),
        "storage": StorageResource(
            data_dir=str(Path(settings.data_dir)),
            cache_dir=str(Path(settings.cache_dir)),
            cache_url=settings.cache.url,  # an S3 bucket prefix, when set, wins
        ),
        "graph_api": graph_api,
    }
