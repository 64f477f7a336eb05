"""Raw Facebook assets: what the Graph API returned, landed as Parquet before any DB write."""

import datetime as dt

import dagster as dg
import pyarrow as pa

from crm_pipeline import lake
from crm_pipeline.defs.facebook.partitions import insights_daily_partitions
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import StorageResource
from crm_pipeline.facebook.client import INSIGHT_FIELDS, GraphApiError

INSIGHTS_STREAM = "fb_ad_insights"

# Kept as Meta sends them (strings): no float ever touches spend; the DB casts to NUMERIC.
RAW_INSIGHTS_SCHEMA = pa.schema([(name, pa.string()) for name in INSIGHT_FIELDS])


@dg.asset(
    partitions_def=insights_daily_partitions,
    group_name="facebook",
    kinds={"facebook", "parquet"},
    owners=["team:data-engineering"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description=(
        "Ad-level daily insights (impressions, clicks, spend, reach) for every configured ad "
        "account, one day per partition, fetched with the facebook-business SDK and landed as "
        "Parquet under CRM_DATA_DIR/raw/fb_ad_insights/."
    ),
)
def fb_ad_insights_raw(
    context: dg.AssetExecutionContext, graph_api: GraphApiResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Fetch one day of ad insights for all accounts and land them as Parquet."""
    day = dt.date.fromisoformat(context.partition_key)
    rows: list[dict] = []
    per_account: dict[str, int] = {}
    with graph_api.session() as graph:
        try:
            for account_id in graph.account_ids:
                before = len(rows)
                rows.extend(
                    graph.client.iter_insights(account_id, day, day, limit=graph_api.page_size)
                )
                per_account[account_id] = len(rows) - before
        except GraphApiError as exc:
            if exc.retryable:
                raise  # the RetryPolicy tries again
            # An invalid token (190) or a permission error will not heal by retrying: fail now.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        calls = graph.client.calls
        server = graph.server
    table = pa.Table.from_pylist(rows, schema=RAW_INSIGHTS_SCHEMA)
    path = lake.write_parquet_atomic(
        table, lake.raw_path(storage.data_path(), INSIGHTS_STREAM, context.partition_key)
    )
    context.log.info(f"{table.num_rows} insight rows for {day} from {server} in {calls} calls")
    return dg.MaterializeResult(
        metadata={
            "rows": table.num_rows,
            "api_calls": calls,
            "accounts": dg.MetadataValue.json(per_account),
            "graph_server": server,
            "path": dg.MetadataValue.path(str(path)),
        }
    )
