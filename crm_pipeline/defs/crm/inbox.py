"""Webhook inbox processing: leadgen events stored by the API become enriched `leads` rows.

The webhook handler only stores Meta's notification (ids, no answers) and acknowledges. Here each
unprocessed leadgen row is enriched with `GET /{leadgen_id}` (the lead's field_data), upserted
into `leads`, linked to a customer and marked processed, all in one transaction per batch; the
`leads` change rows that result drive the change-log sensor's customer 360 rebuilds.
"""

import json
import os
import time

import dagster as dg
import orjson
from facebook_business.adobjects.lead import Lead
from sqlalchemy import Connection, text

from crm_pipeline.db import schema
from crm_pipeline.db.crm_core import link_leads_to_customers
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.crm.assets import flatten_lead
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.streams import LEAD_FIELDS

INBOX_SENSOR_INTERVAL_SECONDS = int(os.environ.get("CRM_INBOX_SENSOR_INTERVAL", "5"))
# Rows left unprocessed by a transient Graph error are retried at most this often.
RETRY_AFTER_SECONDS = int(os.environ.get("CRM_INBOX_RETRY_SECONDS", "60"))
_MAX_ERROR_CHARS = 500


class WebhookLeadsConfig(dg.Config):
    """How many inbox rows one run processes (the sensor requests another run for the rest)."""

    batch_size: int = 500


_CLAIM = """
SELECT id, event_key, payload FROM webhook_inbox
WHERE source = 'leadgen' AND processed_at IS NULL
ORDER BY id LIMIT :limit
FOR UPDATE SKIP LOCKED
"""


def _lead_row(event: dict, fetched: dict) -> dict:
    """The `leads` row for one event: Graph's answer, with the webhook's ids as fallback."""
    field_data = fetched.get("field_data")
    raw = {
        "id": str(fetched.get("id") or event["leadgen_id"]),
        "form_id": fetched.get("form_id") or event.get("form_id"),
        "ad_id": fetched.get("ad_id") or event.get("ad_id"),
        "campaign_id": fetched.get("campaign_id"),
        "page_id": event.get("page_id"),
        "created_time": fetched.get("created_time"),
        "field_data": orjson.dumps(field_data).decode() if field_data is not None else None,
    }
    row = flatten_lead(raw)
    for key in ("form_id", "ad_id", "campaign_id", "page_id"):
        if row.get(key) is not None:
            row[key] = str(row[key])
    return row


def process_inbox(conn: Connection, client, batch_size: int, log=None) -> dict[str, int]:
    """Enrich, upsert and mark one batch of leadgen inbox rows inside `conn`'s transaction."""
    claimed = conn.execute(text(_CLAIM), {"limit": batch_size}).all()
    rows, done, failed, retry = [], [], [], []
    for inbox_id, key, payload in claimed:
        event = payload if isinstance(payload, dict) else json.loads(payload)
        event.setdefault("leadgen_id", key)
        try:
            fetched = client.request(
                lambda lid=key: Lead(lid, api=client.api).api_get(fields=list(LEAD_FIELDS))
            ).export_all_data()
        except GraphApiError as exc:
            if exc.code == 190:
                raise  # an invalid token fails the run with a clear message
            message = str(exc)[:_MAX_ERROR_CHARS]
            (retry if exc.retryable else failed).append((inbox_id, message))
            if log:
                log.warning(f"lead {key}: {'will retry' if exc.retryable else 'gave up'}: {exc}")
            continue
        rows.append(_lead_row(event, fetched))
        done.append(inbox_id)
    result = bulk_upsert(conn, schema.leads, rows)
    linked = link_leads_to_customers(conn) if rows else {}
    if done:
        conn.execute(
            text(
                "UPDATE webhook_inbox SET processed_at = now(), error = NULL WHERE id = ANY(:ids)"
            ),
            {"ids": done},
        )
    for inbox_id, message in failed:  # permanent: keep the row for inspection, stop retrying
        conn.execute(
            text("UPDATE webhook_inbox SET processed_at = now(), error = :e WHERE id = :id"),
            {"id": inbox_id, "e": message},
        )
    for inbox_id, message in retry:
        conn.execute(
            text("UPDATE webhook_inbox SET error = :e WHERE id = :id"),
            {"id": inbox_id, "e": message},
        )
    return {
        "claimed": len(claimed),
        "processed": len(done),
        "failed": len(failed),
        "retry_later": len(retry),
        "inserted": result.inserted,
        "updated": result.updated,
        **linked,
    }


@dg.asset(
    deps=["leads"],
    group_name="crm",
    kinds={"postgres", "facebook"},
    owners=["team:crm"],
    description=(
        "Leadgen webhook events from `webhook_inbox`, enriched with GET /{leadgen_id} and upserted "
        "into `leads` (linked to customers); each inbox row is marked processed. Requested by "
        "webhook_inbox_sensor whenever unprocessed rows exist."
    ),
)
def webhook_leads(
    context: dg.AssetExecutionContext,
    config: WebhookLeadsConfig,
    postgres: PostgresResource,
    graph_api: GraphApiResource,
) -> dg.MaterializeResult:
    """Process one batch of the leadgen inbox."""
    with graph_api.session() as graph, postgres.engine().begin() as conn:
        counts = process_inbox(conn, graph.client, config.batch_size, context.log)
    context.log.info(f"webhook inbox: {counts}")
    return dg.MaterializeResult(metadata=counts)


_PENDING = """
SELECT count(*) AS pending, max(id) AS max_id FROM webhook_inbox
WHERE source = 'leadgen' AND processed_at IS NULL
"""


@dg.sensor(
    asset_selection=[webhook_leads],
    minimum_interval_seconds=INBOX_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests webhook_leads when leadgen webhook events wait unprocessed in webhook_inbox; "
        "rows left by a transient Graph error are retried after CRM_INBOX_RETRY_SECONDS."
    ),
)
def webhook_inbox_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """One run per tick while new events arrive; a retry run now and then for leftovers."""
    cursor = json.loads(context.cursor) if context.cursor else {"max_id": 0, "at": 0.0}
    with postgres.engine().connect() as conn:
        pending, max_id = conn.execute(text(_PENDING)).one()
    if not pending:
        return dg.SkipReason("no unprocessed leadgen events")
    now = time.time()
    if max_id <= cursor["max_id"] and now - cursor["at"] < RETRY_AFTER_SECONDS:
        return dg.SkipReason(f"{pending} event(s) already requested; retrying later")
    context.update_cursor(json.dumps({"max_id": max_id, "at": now}))
    return dg.RunRequest(run_key=f"webhook-inbox-{max_id}-{int(now)}")
