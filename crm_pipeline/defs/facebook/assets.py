"""Raw Facebook assets: what the Graph API returned, landed as Parquet before any DB write.

Insights are partitioned by day and ad account. The other streams are incremental: each reads
its watermark from `sync_state` (advanced by the matching DB asset only after its rows are
committed, so a failed load is fetched again, never skipped) and lands the new batch.
"""

import datetime as dt
from typing import Any

import dagster as dg
import pyarrow as pa

from crm_pipeline import lake
from crm_pipeline.db.sync_state import get_state
from crm_pipeline.defs import groups
from crm_pipeline.defs.facebook.account_totals import land_account_totals
from crm_pipeline.defs.facebook.graph_usage import graph_metadata
from crm_pipeline.defs.facebook.insight_windows import (
    DaySplit,
    LandedDay,
    LandedWindow,
    Window,
    chunks,
    land_windows,
)
from crm_pipeline.defs.facebook.partitions import insights_partitions
from crm_pipeline.defs.facebook.resources import GraphApiResource, GraphSession
from crm_pipeline.defs.facebook.step_rules import (
    GRAPH_POOL,
    RETRY,
    failing_fast,
    quarantine_check,
    quarantine_spec,
    raise_first_failure,
)
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook import object_reads, streams, validate
from crm_pipeline.facebook.account_threads import each_account
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.fields import INSIGHT_FIELDS, RAW_FIELDS
from crm_pipeline.facebook.ids import meta_account_id
from crm_pipeline.facebook.insight_values import value_problem
from crm_pipeline.facebook.transforms import to_arrow

INSIGHTS_STREAM = "fb_ad_insights"
OBJECT_STREAMS = ("campaigns", "adsets", "ads")


@dg.asset(
    partitions_def=insights_partitions,
    # A backfill of many days is one run: each account's days are one /insights query.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=groups.FACEBOOK_RAW,
    kinds={"facebook", "parquet"},
    owners=["team:data-engineering"],
    retry_policy=RETRY,
    pool=GRAPH_POOL,
    check_specs=[quarantine_spec("fb_ad_insights_raw")],
    description=(
        "Ad-level daily insights (impressions, clicks, spend, reach, frequency, actions, "
        "action_values, conversions) of one ad account and day, ads of every status (deleted "
        "and archived included), fetched with the facebook-business SDK through the rate-limit "
        "governor (an async report run when the account is large) and landed as Parquet under "
        "CRM_DATA_DIR/raw/fb_ad_insights/; Meta's account-level totals of the same days land "
        "under raw/fb_account_insights/ for the reconcile check. A run over a range of days "
        "reads each account's consecutive days with one query (time_increment=1) and lands one "
        "file per day."
    ),
)
def fb_ad_insights_raw(
    context: dg.AssetExecutionContext, graph_api: GraphApiResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Fetch the run's account-days of ad insights and land one Parquet file per account-day.

    Each account's consecutive days are read with one /insights query (up to
    `insights_days_per_query` days) and split by `date_start`, so the per-day files and
    quarantine are exactly those of running each day alone; accounts are read at once. A day
    Meta returns no rows for lands as an empty file: the DB asset then deletes that day's
    stale rows.
    """

    def land_window(client: GraphClient, window: Window) -> LandedWindow:
        return _land_insights_window(client, graph_api, storage, window)

    return land_windows(context, graph_api, "fb_ad_insights_raw", land_window)


def _land_insights_window(
    client: GraphClient, graph_api: GraphApiResource, storage: StorageResource, window: Window
) -> LandedWindow:
    """One window's ad rows and Meta's account totals of the same days, landed per day."""
    account_id, days = window.account_id, window.days
    # Meta's own account totals of the same days (what the ad rows must add up to) first: the
    # window's last page then ends its chain of calls, with only its own rows left to check.
    totals = land_account_totals(client, storage, account_id, days, page_size=graph_api.page_size)
    split = DaySplit(days, check_insight_day, lambda good: to_arrow(good, INSIGHT_FIELDS))
    rows = graph_api.fetch_insights(client, account_id, window.since, window.until)
    for chunk in chunks(rows, graph_api.page_size):
        split.add(chunk)
    landed = LandedWindow(
        window,
        [],
        f"{split.rows} insight rows for {account_id} {window.since}..{window.until}",
        bad=totals.bad,
    )
    for day in days:
        day_meta, bad_path = _land_insights_day(
            storage, account_id, day, split.good(day), split.bad[day]
        )
        day_meta["account_total_rows"] = totals.rows[day]
        landed.days.append(LandedDay(day, day_meta, split.bad[day], bad_path))
    return landed


def _land_insights_day(
    storage: StorageResource, account_id: str, day: str, table: pa.Table, bad: list[dict]
) -> tuple[dict[str, Any], Any]:
    """Land one account-day's good rows (an empty file when none) and quarantine its bad ones;
    returns the day's metadata and the quarantine file (None when every row was good)."""
    partition = f"account={account_id}/date={day}"
    path = lake.land_partition(storage.data_path(), INSIGHTS_STREAM, partition, table)
    bad_path = lake.write_quarantine(storage.data_path(), INSIGHTS_STREAM, partition, bad)
    day_meta = {
        "rows": table.num_rows,
        "quarantined": len(bad),
        "path": dg.MetadataValue.path(str(path)),
    }
    return day_meta, bad_path


def check_insight_day(rows: list[dict], day: str) -> validate.Checked:
    """One day's ad insight rows checked: their ids, day and counts, then the value fields
    (a frequency or an action value that is not a number is quarantined too)."""
    checked = validate.check_insights(rows, day)
    result = validate.Checked(bad=list(checked.bad))
    for row in checked.good:
        reason = value_problem(row)
        if reason:
            result.bad.append({"reason": reason, "record": row})
        else:
            result.good.append(row)
    return result


# Incremental reads start this far before the watermark: an object updated in the same second
# as the newest one we saw, but committed at Meta after our read, is not skipped. Re-reading a
# few rows costs nothing: the DB side is an idempotent upsert.
WATERMARK_OVERLAP = dt.timedelta(minutes=5)


def _since(value: str | None) -> dt.datetime | None:
    parsed = validate.parse_meta_time(value) if value else None
    return parsed - WATERMARK_OVERLAP if parsed else None


def _unix(value: str | None) -> int | None:
    since = _since(value)
    return int(since.timestamp()) if since else None


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            f"fb_{kind}_raw",
            group_name=groups.FACEBOOK_RAW,
            kinds={"facebook", "parquet"},
            owners=["team:data-engineering"],
            description=(
                f"{kind.capitalize()} of every configured ad account updated since the last "
                "sync (incremental on updated_time), of every status (deleted and archived "
                "included), landed as Parquet. Objects Meta refuses to return are quarantined "
                "and counted (`refused`)."
            ),
        )
        for kind in OBJECT_STREAMS
    ]
    + [
        dg.AssetSpec(
            "fb_ad_accounts_raw",
            group_name=groups.FACEBOOK_RAW,
            kinds={"facebook", "parquet"},
            owners=["team:data-engineering"],
            description=(
                "Every configured ad account node (name, currency, time zone, status), read in "
                "full at each sync and landed as Parquet."
            ),
        )
    ],
    check_specs=[quarantine_spec(f"fb_{kind}_raw") for kind in (*OBJECT_STREAMS, "ad_accounts")],
    retry_policy=RETRY,
    pool=GRAPH_POOL,
)
def fb_ad_objects_raw(
    context: dg.AssetExecutionContext,
    graph_api: GraphApiResource,
    storage: StorageResource,
    postgres: PostgresResource,
):
    """The ad accounts, and their campaigns, ad sets and ads changed since each watermark."""
    with failing_fast(), graph_api.session() as graph:
        with postgres.engine().connect() as conn:
            marks = {
                # Watermarks are kept per Meta's account_id, which has no act_ prefix.
                (kind, acct): get_state(conn, kind, meta_account_id(acct)).get("updated_time")
                for kind in OBJECT_STREAMS
                for acct in graph.account_ids
            }

        def read_account(acct: str) -> tuple[dict, dict[str, object_reads.ObjectBatch]]:
            # The account node (a handful of fields: read whole, no watermark), then its
            # objects changed since each watermark.
            node = graph.client.read_ad_account(acct)
            got = {
                kind: object_reads.read_objects(
                    graph.client, kind, acct, _unix(marks[(kind, acct)])
                )
                for kind in OBJECT_STREAMS
            }
            return node, got

        # Accounts at once (Meta limits each on its own); landed in the configured order.
        outcomes = list(each_account(read_account, graph.account_ids))
        for outcome in outcomes:
            if outcome.error is not None:
                context.log.error(f"ad objects of {outcome.account_id} failed: {outcome.error}")
        with failing_fast():
            raise_first_failure(outcomes)
        done = {o.account_id: o.value for o in outcomes}
        accounts = [done[acct][0] for acct in graph.account_ids]
        batches = {kind: object_reads.ObjectBatch() for kind in OBJECT_STREAMS}
        for acct in graph.account_ids:
            for kind, got in done[acct][1].items():
                batches[kind].objects += got.objects
                batches[kind].refused += got.refused
        usage = graph_metadata(graph)
    for kind, got in batches.items():
        yield from _land(
            context, storage, kind, got.objects, validate.check_objects, usage, got.refused
        )
    yield from _land(context, storage, "ad_accounts", accounts, validate.check_ad_accounts, usage)


def _land(
    context, storage, kind: str, rows: list[dict], check, usage: dict, refused=None, erased=None
):
    """Validate, land the batch as Parquet, and report it (one stream of a multi-asset).

    `refused` (object streams): what Meta would not return, quarantined with the bad rows.
    `erased` (personal streams): the erased people, whose rows are dropped before anything
    lands (invariant 12), and counted.
    """
    dropped = {}
    if erased is not None:
        rows, count = erased.keep(rows)
        dropped = {"dropped_erased": count}
    checked = check(rows)
    bad = [*checked.bad, *(refused or [])]
    table = to_arrow(checked.good, RAW_FIELDS[kind])
    path = lake.land_sync(storage.data_path(), kind, table)
    bad_path = lake.write_quarantine(storage.data_path(), kind, "latest", bad)
    times = [r.get("updated_time") or r.get("created_time") for r in checked.good]
    refusals = {} if refused is None else {"refused": len(refused)}
    yield dg.MaterializeResult(
        asset_key=f"fb_{kind}_raw",
        metadata={
            "rows": table.num_rows,
            "quarantined": len(bad),
            **refusals,
            **dropped,
            "newest": max((t for t in times if t), default=None) or "",
            **usage,
            "path": dg.MetadataValue.path(str(path)),
        },
    )
    yield quarantine_check(f"fb_{kind}_raw", bad, bad_path, **refusals)


def _page_clients(graph: GraphSession) -> dict[str, GraphClient]:
    """Every configured page's client, every Page token asked before any page is read.

    A page the token cannot act as (unknown, no task on it, no permission) fails the step here,
    before anything of any page is read or landed: nothing is lost and no watermark moves; once
    the configuration is fixed, the next run reads every page from its own watermark.
    """
    return {page: graph.page_client(page) for page in graph.page_ids}


@dg.asset(
    group_name=groups.FACEBOOK_RAW,
    kinds={"facebook", "parquet"},
    owners=["team:data-engineering"],
    retry_policy=RETRY,
    pool=GRAPH_POOL,
    check_specs=[quarantine_spec("fb_leads_raw")],
    description=(
        "Lead Ads leads of every lead form on each page of FB_PAGE_ID/FB_PAGE_IDS (forms "
        "discovered from the page, read with its Page access token), incremental on "
        "time_created, landed as Parquet with field_data kept whole."
    ),
)
def fb_leads_raw(
    context: dg.AssetExecutionContext,
    graph_api: GraphApiResource,
    storage: StorageResource,
    postgres: PostgresResource,
):
    """Leads created since each form's watermark, on every configured page."""
    with failing_fast(), graph_api.session() as graph:
        if not graph.page_ids:
            context.log.warning("FB_PAGE_ID/FB_PAGE_IDS are not set: no lead forms to sync")
        with failing_fast():
            clients = _page_clients(graph)
            forms = streams.lead_forms_of(clients)
            with postgres.engine().connect() as conn:
                marks = {
                    f["id"]: _unix(get_state(conn, "leads", f["id"]).get("created_time"))
                    for _, f in forms
                }
            rows = streams.read_leads_of(clients, forms, marks)
        usage = {**graph_metadata(graph), "forms": len(forms), "facebook_pages": len(clients)}
    erased = postgres.erased()
    yield from _land(context, storage, "leads", rows, validate.check_leads, usage, erased=erased)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "fb_conversations_raw",
            group_name=groups.FACEBOOK_RAW,
            kinds={"facebook", "parquet"},
            owners=["team:data-engineering"],
            description=(
                "Messenger conversations of each page of FB_PAGE_ID/FB_PAGE_IDS updated since "
                "its last sync, read with the page's Page access token."
            ),
        ),
        dg.AssetSpec(
            "fb_messages_raw",
            group_name=groups.FACEBOOK_RAW,
            kinds={"facebook", "parquet"},
            owners=["team:data-engineering"],
            description="Messages of those conversations newer than the last sync.",
        ),
    ],
    check_specs=[quarantine_spec("fb_conversations_raw"), quarantine_spec("fb_messages_raw")],
    retry_policy=RETRY,
    pool=GRAPH_POOL,
)
def fb_conversations_raw(
    context: dg.AssetExecutionContext,
    graph_api: GraphApiResource,
    storage: StorageResource,
    postgres: PostgresResource,
):
    """Each page's conversations newer than its watermark (paging stops there), with messages."""
    with failing_fast(), graph_api.session() as graph:
        if not graph.page_ids:
            context.log.warning("FB_PAGE_ID/FB_PAGE_IDS are not set: no conversations to sync")
        with postgres.engine().connect() as conn:
            marks = {
                p: _since(get_state(conn, "conversations", p).get("updated_time"))
                for p in graph.page_ids
            }
        with failing_fast():
            batch = streams.read_conversations_of(_page_clients(graph), marks)
        usage = {**graph_metadata(graph), "facebook_pages": len(graph.page_ids)}
    # Erased people are dropped before anything lands (invariant 12), with their threads.
    conversations, messages, dropped = postgres.erased().keep_threads(
        batch.conversations, batch.messages
    )
    usage["dropped_erased"] = dropped
    yield from _land(
        context, storage, "conversations", conversations, validate.check_conversations, usage
    )
    yield from _land(context, storage, "messages", messages, validate.check_messages, usage)
