"""Webhook → inbox → sensor → webhook_leads → enriched lead → customer 360 file."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from graph_emulator.webhooks import leadgen_payload, post_webhook
from sqlalchemy import text

from crm_pipeline.cachefile import read_json
from crm_pipeline.defs.cache.assets import customer_profiles_cache
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.crm.inbox import webhook_inbox_sensor, webhook_leads
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline_tests.api.conftest import APP_SECRET


def _resources(database_url, emulator, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(graph_url=emulator.url, ad_account_ids="act_1001"),
    }


def _sensor_tick(sensor, resources, cursor=None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = sensor(context)
        return result, context.cursor


def test_signed_leadgen_ends_as_enriched_lead_and_customer_360(
    api, clean_db, database_url, emulator, dirs
):
    data = emulator.data
    form_id = data.lead_forms()[0]["id"]
    lead = data.add_lead(
        form_id,
        created_time=dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC),
        email="Dee@Example.com",
        full_name="Dee Webhook",
        phone="+15550001111",
    )
    resources = _resources(database_url, emulator, dirs)
    skip, _ = _sensor_tick(webhook_inbox_sensor, resources)
    assert isinstance(skip, dg.SkipReason)

    payload = leadgen_payload(data.page_id, form_id, lead["id"], None, 1761998400)
    assert post_webhook(f"{api.url}/webhooks/facebook", payload, APP_SECRET) == 200
    assert post_webhook(f"{api.url}/webhooks/facebook", payload, APP_SECRET) == 200

    request, cursor = _sensor_tick(webhook_inbox_sensor, resources)
    assert isinstance(request, dg.RunRequest)
    again, _ = _sensor_tick(webhook_inbox_sensor, resources, cursor)
    assert isinstance(again, dg.SkipReason)  # already requested: no duplicate runs

    with clean_db.connect() as conn:
        since = conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar()
    result = dg.materialize([webhook_leads], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("webhook_leads")[0].metadata
    assert metadata["processed"].value == 1

    row, inbox = _stored_lead(clean_db)
    assert (row.id, row.form_id, row.page_id) == (lead["id"], form_id, data.page_id)
    assert (row.email, row.full_name) == ("Dee@Example.com", "Dee Webhook")
    assert row.customer_id is not None
    assert isinstance(row.field_data, list)
    assert inbox.processed_at is not None and inbox.error is None

    done, _ = _sensor_tick(webhook_inbox_sensor, resources, cursor)
    assert isinstance(done, dg.SkipReason)

    # The leads/customers change rows drive the change-log sensor: a targeted 360 rebuild.
    profile = _targeted_profile_rebuild(resources, since, row.customer_id, dirs["cache"])
    assert [x["id"] for x in profile["leads"]] == [lead["id"]]


def _stored_lead(engine):
    """The one lead row and the one inbox row."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, form_id, email, full_name, phone, page_id, customer_id, field_data"
                " FROM leads"
            )
        ).one()
        inbox = conn.execute(text("SELECT processed_at, error FROM webhook_inbox")).one()
    return row, inbox


def _targeted_profile_rebuild(resources, since: str, customer_id: int, cache_dir) -> dict:
    """Tick the change-log sensor from `since`, check it targets exactly `customer_id`, run
    what it asks for, and return that customer's 360 file."""
    cache_request, _ = _sensor_tick(change_log_sensor, resources, f'{{"upto": "{since}"}}')
    (run_request,) = cache_request.run_requests
    op_config = run_request.run_config["ops"]["customer_profiles_cache"]
    assert op_config["config"]["customer_ids"] == [customer_id]
    result = dg.materialize(
        [customer_profiles_cache],
        resources=resources,
        run_config={"ops": {"customer_profiles_cache": op_config}},
    )
    assert result.success
    return read_json(cache_dir / "customers" / f"{customer_id}.json")


def test_unknown_lead_is_marked_failed_not_retried_forever(
    api, clean_db, database_url, emulator, dirs
):
    payload = leadgen_payload("2001", "1460000000000001", "424242424242", None, 1761998400)
    assert post_webhook(f"{api.url}/webhooks/facebook", payload, APP_SECRET) == 200
    resources = _resources(database_url, emulator, dirs)
    assert dg.materialize([webhook_leads], resources=resources).success
    with clean_db.connect() as conn:
        inbox = conn.execute(text("SELECT processed_at, error FROM webhook_inbox")).one()
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar() == 0
    assert inbox.processed_at is not None
    assert inbox.error


def test_inbox_definitions_load_with_the_code_location():
    from crm_pipeline.definitions import default_resources

    defs = dg.Definitions(
        assets=[webhook_leads], sensors=[webhook_inbox_sensor], resources=default_resources()
    )
    dg.Definitions.validate_loadable(defs)
    sensor = defs.resolve_sensor_def("webhook_inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
