"""Running the asset graph from the command line (demo, `crm-pipeline sync`) through Dagster.

Runs go through `dagster.materialize` on a real Dagster instance, so they appear in the UI's
run history and asset catalog exactly like scheduled runs.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from crm_pipeline.config import Settings
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
from crm_pipeline.defs.facebook.partitions import configured_account_ids, insights_partition_key
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.facebook.schedules import STREAM_ASSETS
from crm_pipeline.defs.resources import PostgresResource, StorageResource

CHECKPOINT_STREAM = "cli_insights_sync"
# Event-level DEBUG lines belong in the UI's run view, not on the terminal.
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
    if not os.environ.get("DAGSTER_HOME"):
        home = (settings.data_dir / "dagster").resolve()
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


@contextmanager
def graph_resource(settings: Settings) -> Iterator[GraphApiResource]:
    """The Graph API resource; with no credentials, one emulator serves every run of the call."""
    with ExitStack() as stack:
        if settings.uses_emulator:
            from crm_pipeline.facebook.emulator import EmulatorData, GraphEmulator

            data = EmulatorData()
            emulator = stack.enter_context(GraphEmulator(data))
            yield GraphApiResource(
                graph_url=emulator.url,
                ad_account_ids=",".join(data.account_ids),
                page_id=data.page_id,
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
) -> SyncReport:
    """The incremental streams once, insights per account-day, then the caches once.

    Finished account-days are checkpointed in `sync_state` under this range: when a run ends
    early (a rate-limit wait past the budget, a crash), the same command resumes where it
    stopped without fetching the finished days again. The checkpoint is cleared at the end.
    """
    report = SyncReport(days=days)
    accounts = configured_account_ids()
    scope = f"{days[0]}..{days[-1]}|{','.join(accounts)}"
    engine = get_engine(database_url)
    with engine.connect() as conn:
        done = set(get_state(conn, CHECKPOINT_STREAM, scope).get("done", []))
    report.resumed = len(done)

    result = _run(STREAM_ASSETS, None, resources, instance, "facebook streams sync")
    for asset in STREAM_ASSETS:
        report.api_calls += _metadata(result, asset).get("api_calls", 0)
    for day in days:
        for account in accounts:
            key = insights_partition_key(account, day)
            if str(key) in done:
                continue
            result = _run(
                [fb_ad_insights_raw, ad_insights_daily],
                key,
                resources,
                instance,
                f"insights sync for {account} {day}",
            )
            raw = _metadata(result, fb_ad_insights_raw)
            db = _metadata(result, ad_insights_daily)
            report.api_calls += raw.get("api_calls", 0)
            report.insight_rows += db.get("rows", 0)
            report.inserted += db.get("inserted", 0)
            report.updated += db.get("updated", 0)
            done.add(str(key))
            with engine.begin() as conn:
                put_state(conn, CHECKPOINT_STREAM, scope, {"done": sorted(done)})
    with engine.begin() as conn:
        conn.execute(
            sync_state.delete().where(
                sync_state.c.stream == CHECKPOINT_STREAM, sync_state.c.scope == scope
            )
        )
    if refresh_caches:
        report.cache_files = refresh_cache_files(resources=resources, instance=instance)
    return report


def _run(assets, partition_key, resources, instance, what: str) -> dg.ExecuteInProcessResult:
    return _check(
        dg.materialize(
            assets,
            partition_key=partition_key,
            resources=resources,
            instance=instance,
            tags={"crm/trigger": "cli"},
            run_config=_QUIET,
            raise_on_error=False,
        ),
        what,
    )


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
            data_dir=str(Path(settings.data_dir)), cache_dir=str(Path(settings.cache_dir))
        ),
        "graph_api": graph_api,
    }
