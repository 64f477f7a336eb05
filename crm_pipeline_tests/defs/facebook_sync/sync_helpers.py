"""Shared helpers of the end-to-end Facebook sync tests: resources, runs and snapshots."""

import dagster as dg
import orjson
from graph_emulator import EmulatorData

from crm_pipeline import orchestrate
from crm_pipeline.db.schema import metadata
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_partition_range, partition_range_tags
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource

DAYS = ["2026-11-18", "2026-11-19"]
ACCOUNTS = ("act_1001", "act_1002")
FB_TABLES = (
    "ad_accounts",
    "campaigns",
    "adsets",
    "ads",
    "ad_insights_daily",
    "ad_account_insights_daily",
    "leads",
    "conversations",
    "messages",
)
# Columns that record when we synced, not what Meta said.
VOLATILE = {"synced_at"}


def resources_for(database_url, url, dirs):
    """Resources for a sync of ACCOUNTS and page 2001 from the server at `url`."""
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(
            graph_url=url, ad_account_ids=",".join(ACCOUNTS), page_id="2001", page_size=10
        ),
    }


def sync(database_url, server, dirs, days=DAYS, instance=None):
    """`crm-pipeline sync` of `days` from `server`, without refreshing the cache files."""
    return orchestrate.sync_facebook(
        days,
        resources=resources_for(database_url, server.url, dirs),
        instance=instance or dg.DagsterInstance.ephemeral(),
        database_url=database_url,
        refresh_caches=False,
    )


def snapshot(engine) -> dict[str, list]:
    """Every Facebook table's rows (without sync times), in key order."""
    state = {}
    with engine.connect() as conn:
        for name in FB_TABLES:
            table = metadata.tables[name]
            cols = [c for c in table.c if c.name not in VOLATILE]
            order = [c for c in table.primary_key.columns]
            state[name] = conn.execute(
                table.select().with_only_columns(*cols).order_by(*order)
            ).all()
    return state


def insight_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The partitioned runs (the streams run has no partition): the insights runs."""
    return [
        r
        for r in instance.get_runs()
        if {"dagster/partition", "dagster/asset_partition_range_start"} & set(r.tags)
    ]


def is_account_totals(request) -> bool:
    """Whether `request` read Meta's account-level totals (beside the ad-level insights)."""
    return request.path.endswith("/insights") and request.params.get("level") == "account"


def insight_windows(server) -> list[tuple[str, str, str]]:
    """(account, since, until) of every ad-level insights request the server saw."""
    windows = []
    for r in server.requests:
        if r.path.endswith("/insights") and not is_account_totals(r):
            account = r.path.split("/")[-2]
            time_range = orjson.loads(r.params["time_range"])
            windows.append((account, time_range["since"], time_range["until"]))
    return windows


class MalformedData(EmulatorData):
    """Emulator data whose first insights row of any read has no campaign id.

    The ad-level read returns it as it is (and the sync quarantines it); Meta's account totals
    still count its numbers, as they would for a row the sync cannot load.
    """

    def served_insights(self, account_id, since, until):
        rows = super().insights(account_id, since, until)
        if rows:
            rows[0] = {**rows[0], "campaign_id": ""}
        return rows


def range_run(resources, account: str, first: str, last: str) -> dg.ExecuteInProcessResult:
    """Insights of `account` for `first..last` as one Dagster run over a partition range."""
    return dg.materialize(
        [fb_ad_insights_raw, ad_insights_daily],
        tags=partition_range_tags(insights_partition_range(account, first, last)),
        resources=resources,
    )
