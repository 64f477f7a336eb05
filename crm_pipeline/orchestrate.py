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
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource

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
                graph_url=emulator.url, ad_account_ids=",".join(data.account_ids)
            )
        else:
            yield GraphApiResource()


def _check(result: dg.ExecuteInProcessResult, what: str) -> dg.ExecuteInProcessResult:
    if not result.success:
        failures = [
            f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
            for e in result.all_events
            if e.is_step_failure and e.event_specific_data and e.event_specific_data.error
        ]
        raise RunFailed(f"{what} failed (run {result.run_id}): " + "; ".join(failures))
    return result


def _metadata(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    events = result.asset_materializations_for_node(asset.op.name)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


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
    refresh_caches: bool = True,
) -> SyncReport:
    """Materialise the Facebook raw and DB assets for each day, then the caches once."""
    report = SyncReport(days=days)
    for day in days:
        result = _check(
            dg.materialize(
                [fb_ad_insights_raw, ad_insights_daily],
                partition_key=day,
                resources=resources,
                instance=instance,
                tags={"crm/trigger": "cli"},
                run_config=_QUIET,
                raise_on_error=False,
            ),
            f"facebook sync for {day}",
        )
        raw = _metadata(result, fb_ad_insights_raw)
        db = _metadata(result, ad_insights_daily)
        report.api_calls += raw.get("api_calls", 0)
        report.insight_rows += db.get("rows", 0)
        report.inserted += db.get("inserted", 0)
        report.updated += db.get("updated", 0)
    if refresh_caches:
        report.cache_files = refresh_cache_files(resources=resources, instance=instance)
    return report


def refresh_cache_files(*, resources: dict, instance: dg.DagsterInstance) -> dict[str, str]:
    """Rebuild the marketing cache and the summary in one run; return their paths."""
    result = _check(
        dg.materialize(
            [marketing_insights_cache, analytics_summary],
            resources=resources,
            instance=instance,
            tags={"crm/trigger": "cli"},
            run_config=_QUIET,
            raise_on_error=False,
        ),
        "cache refresh",
    )
    return {
        asset.key.to_user_string(): str(_metadata(result, asset)["path"])
        for asset in (marketing_insights_cache, analytics_summary)
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
