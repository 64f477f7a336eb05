"""Raw Facebook assets: what the Graph API returned, landed as Parquet before any DB write.

Insights are partitioned by day and ad account. The other streams are incremental: each reads
its watermark from `sync_state` (advanced by the matching DB asset only after its rows are
committed, so a failed load is fetched again, never skipped) and lands the new batch.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from crm_pipeline import lake
from crm_pipeline.config import ConfigError
from crm_pipeline.db.sync_state import get_state
from crm_pipeline.defs import groups
from crm_pipeline.defs.facebook.account_totals import land_account_totals
from crm_pipeline.defs.facebook.graph_usage import graph_metadata
from crm_pipeline.defs.facebook.partitions import (
    account_and_day,
    days_by_account,
    insights_partitions,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource, GraphSession
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook import object_reads, streams, validate
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.fields import INSIGHT_FIELDS, RAW_FIELDS
from crm_pipeline.facebook.ids import meta_account_id
from crm_pipeline.facebook.insight_values import value_problem
from crm_pipeline.facebook.transforms import to_arrow

INSIGHTS_STREAM = "fb_ad_insights"
OBJECT_STREAMS = ("campaigns", "adsets", "ads")

GRAPH_POOL = "graph_api"  # op concurrency pool: how many steps call Meta at once (dagster.yaml)
RETRY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@contextmanager
def failing_fast() -> Iterator[None]:
    """Retryable Graph errors go back to the RetryPolicy; the rest fail the step at once.

    A configuration error (missing credentials, no emulator package) will not heal by retrying
    either: the run fails at once, naming what to set.
    """
    try:
        yield
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except GraphApiError as exc:
        if exc.retryable:
            raise
        # An invalid token (190) or a permission error will not heal by retrying.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def quarantine_check(asset_key: str, bad: list[dict], path, **extra: Any) -> dg.AssetCheckResult:
    """The visible verdict on malformed rows of one materialisation."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name="no_quarantined_rows",
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "quarantined": len(bad),
            "reasons": dg.MetadataValue.json(sorted({b["reason"] for b in bad})[:20]),
            **({"path": dg.MetadataValue.path(str(path))} if path else {}),
            **extra,
        },
    )


def _quarantine_spec(name: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "no_quarantined_rows",
        asset=name,
        description="Fails when the Graph API returned rows that could not be loaded.",
    )


@dg.asset(
    partitions_def=insights_partitions,
    # A backfill of many days is one run: each account's days are one /insights query.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=groups.FACEBOOK_RAW,
    kinds={"facebook", "parquet"},
    owners=["team:data-engineering"],
    retry_policy=RETRY,
    pool=GRAPH_POOL,
    check_specs=[_quarantine_spec("fb_ad_insights_raw")],
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
    quarantine are exactly those of running each day alone. A day Meta returns no rows for
    lands as an empty file: the DB asset then deletes that day's stale rows.
    """
    keys = {account_and_day(key): key for key in context.partition_keys}
    landed: list[dict[str, Any]] = []
    bad: dict[int, dict] = {}  # distinct malformed rows (a stray row is in several days)
    bad_paths = []
    with failing_fast(), graph_api.session() as graph:
        for account_id, days, since, until in account_windows(
            keys, graph_api.insights_days_per_query
        ):
            with failing_fast():
                rows = list(graph_api.fetch_insights(graph.client, account_id, since, until))
                # Meta's own account totals of the same days: what the ad rows must add up to.
                totals = land_account_totals(
                    graph.client, storage, account_id, days, page_size=graph_api.page_size
                )
            context.log.info(f"{len(rows)} insight rows for {account_id} {since}..{until}")
            bad.update({id(b["record"]): b for b in totals.bad})
            for day, checked in split_by_day(rows, days).items():
                day_meta, bad_path = _land_insights_day(storage, account_id, day, checked)
                bad.update({id(b["record"]): b for b in checked.bad})
                bad_paths += [bad_path] if bad_path else []
                context.add_asset_metadata(
                    {**day_meta, "account_total_rows": totals.rows[day]},
                    partition_key=keys[(account_id, day)],
                )
                landed.append(day_meta)
        usage = graph_metadata(graph)
    context.log.info(
        f"{sum(d['rows'] for d in landed)} insight rows in {len(landed)} account-day(s) ({usage})"
    )
    # Every partition's event carries the API usage of the run; rows, quarantined and path are
    # the partition's own (added above). A range also gets its totals.
    metadata: dict[str, Any] = dict(usage)
    if len(landed) > 1:
        metadata.update(
            range_partitions=len(landed),
            range_rows=sum(d["rows"] for d in landed),
            range_quarantined=len(bad),
        )
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            quarantine_check(
                "fb_ad_insights_raw",
                list(bad.values()),
                bad_paths[0] if len(bad_paths) == 1 else None,
                **({"quarantined_files": len(bad_paths)} if len(bad_paths) > 1 else {}),
            )
        ],
    )


def _land_insights_day(
    storage: StorageResource, account_id: str, day: str, checked: validate.Checked
) -> tuple[dict[str, Any], Any]:
    """Land one account-day's good rows (an empty file when none) and quarantine its bad ones;
    returns the day's metadata and the quarantine file (None when every row was good)."""
    partition = f"account={account_id}/date={day}"
    table = to_arrow(checked.good, INSIGHT_FIELDS)
    path = lake.land_partition(storage.data_path(), INSIGHTS_STREAM, partition, table)
    bad_path = lake.write_quarantine(storage.data_path(), INSIGHTS_STREAM, partition, checked.bad)
    day_meta = {
        "rows": table.num_rows,
        "quarantined": len(checked.bad),
        "path": dg.MetadataValue.path(str(path)),
    }
    return day_meta, bad_path


def account_windows(
    account_days: Iterable[tuple[str, str]], most: int
) -> Iterator[tuple[str, list[str], dt.date, dt.date]]:
    """Each account's consecutive days, cut into windows of at most `most` days, one query
    each: `(account, days, first day, last day)`."""
    most = max(1, most)
    for account_id, runs in days_by_account(account_days).items():
        for run in runs:
            for start in range(0, len(run), most):
                days = run[start : start + most]
                yield (
                    account_id,
                    days,
                    dt.date.fromisoformat(days[0]),
                    dt.date.fromisoformat(days[-1]),
                )


def split_by_day(
    rows: list[dict],
    days: list[str],
    check: Callable[[list[dict], str], validate.Checked] | None = None,
) -> dict[str, validate.Checked]:
    """One query's rows checked per day of `days`, keyed on `date_start`.

    A row whose date_start is none of `days` cannot be placed: it is quarantined in every day
    of the query, so none of them is mirrored (its row might belong to any of them). For one
    day this is exactly checking every row against that day. `check(rows, day)` checks other
    rows than the built-in ad insights (a custom insights entry's).
    """
    buckets: dict[str, list[dict]] = {day: [] for day in days}
    for row in rows:
        day = row.get("date_start") if isinstance(row, dict) else None
        if isinstance(day, str) and day in buckets:
            buckets[day].append(row)
        else:
            for bucket in buckets.values():
                bucket.append(row)
    if check is not None:
        return {day: check(bucket, day) for day, bucket in buckets.items()}
    return {
        day: _check_values(validate.check_insights(bucket, day)) for day, bucket in buckets.items()
    }


def _check_values(checked: validate.Checked) -> validate.Checked:
    """`checked` with the good rows whose value fields cannot be loaded (a frequency or an
    action value that is not a number) moved to the quarantined ones."""
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
    check_specs=[_quarantine_spec(f"fb_{kind}_raw") for kind in (*OBJECT_STREAMS, "ad_accounts")],
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
        batches = {kind: object_reads.ObjectBatch() for kind in OBJECT_STREAMS}
        with failing_fast():
            # A handful of nodes, one call each: always read whole, no watermark.
            accounts = [graph.client.read_ad_account(acct) for acct in graph.account_ids]
            for kind in OBJECT_STREAMS:
                for acct in graph.account_ids:
                    got = object_reads.read_objects(
                        graph.client, kind, acct, _unix(marks[(kind, acct)])
                    )
                    batches[kind].objects += got.objects
                    batches[kind].refused += got.refused
        usage = graph_metadata(graph)
    for kind, got in batches.items():
        yield from _land(
            context, storage, kind, got.objects, validate.check_objects, usage, got.refused
        )
    yield from _land(context, storage, "ad_accounts", accounts, validate.check_ad_accounts, usage)


def _land(context, storage, kind: str, rows: list[dict], check, usage: dict, refused=None):
    """Validate, land the batch as Parquet, and report it (one stream of a multi-asset).

    `refused` (object streams): what Meta would not return, quarantined with the bad rows.
    """
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
    check_specs=[_quarantine_spec("fb_leads_raw")],
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
    yield from _land(context, storage, "leads", rows, validate.check_leads, usage)


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
    check_specs=[_quarantine_spec("fb_conversations_raw"), _quarantine_spec("fb_messages_raw")],
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
    yield from _land(
        context,
        storage,
        "conversations",
        batch.conversations,
        validate.check_conversations,
        usage,
    )
    yield from _land(context, storage, "messages", batch.messages, validate.check_messages, usage)
