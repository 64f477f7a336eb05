"""webhook_leads: claims, enrichment with no transaction open, and what each Graph error does.

These run the real asset (or its `process_inbox`) against the bundled emulator, slowed down or
failing through its latency and fault injection, and watch PostgreSQL from another connection.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time

import dagster as dg
import orjson
import psycopg
import pytest
from graph_emulator.faults import Fault
from sqlalchemy import text

from crm_pipeline.db.engine import get_engine, libpq_url
from crm_pipeline.defs.crm.inbox import (
    _LOCK_SPACE,
    process_inbox,
    webhook_inbox_sensor,
    webhook_leads,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook.governor_registry import reset_governors
from crm_pipeline_tests.defs.test_sensor_and_schedule import _tick as change_log_tick

LATENCY_MS = 2000  # how long the emulator holds each Graph call in the slow tests


@pytest.fixture(autouse=True)
def _fresh_governors():
    """A throttle seen by one test must not pace the next (governors are process-wide)."""
    reset_governors()
    yield
    reset_governors()


def _resources(database_url, emulator, dirs) -> dict:
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(graph_url=emulator.url, ad_account_ids="act_1001"),
    }


def _new_lead(data, n: int) -> dict:
    return data.add_lead(
        data.lead_forms()[0]["id"],
        created_time=dt.datetime(2026, 11, 1, 12, n, tzinfo=dt.UTC),
        email=f"inbox{n}@example.com",
        full_name=f"Inbox Lead {n}",
        phone=f"+1555000{n:04d}",
    )


def _enqueue(engine, data, lead: dict, **columns) -> int:
    """Store a leadgen notification as the webhook handler does (ids only, no answers)."""
    payload = {
        "leadgen_id": lead["id"],
        "page_id": data.page_id,
        "form_id": data.lead_forms()[0]["id"],
        "ad_id": None,
        "created_time": 1761998400,
    }
    extra = "".join(f", {c}" for c in columns)
    values = "".join(f", :{c}" for c in columns)
    with engine.begin() as conn:
        return conn.execute(
            text(
                f"INSERT INTO webhook_inbox (source, event_key, payload{extra})"
                f" VALUES ('leadgen', :key, CAST(:payload AS jsonb){values}) RETURNING id"
            ),
            {"key": lead["id"], "payload": orjson.dumps(payload).decode(), **columns},
        ).scalar_one()


def _lead_gets(emulator, lead_ids) -> collections.Counter:
    """How many times the emulator was asked for each of `lead_ids` (GET /{leadgen_id})."""
    wanted = set(lead_ids)
    nodes = (r.path.rstrip("/").rsplit("/", 1)[-1] for r in emulator.requests if r.method == "GET")
    return collections.Counter(node for node in nodes if node in wanted)


def _inbox(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT id, event_key, processed_at, error, status FROM webhook_inbox ORDER BY id")
        ).all()


def _inbox_claims_held(engine) -> int:
    """Inbox claims (advisory locks in the inbox's lock space) still held in this database."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND l.locktype = 'advisory'"
                "   AND l.classid = CAST(:space AS oid) AND l.objsubid = 2"
            ),
            {"space": _LOCK_SPACE},
        ).scalar_one()


# Backends of this database, other than the observer's own, inside a transaction (open,
# running a statement or idle in one) or holding an xid or a snapshot: anything that holds back
# pg_snapshot_xmin and so the change-log watermark.
_TRANSACTIONS = """
SELECT pid, state, backend_xid::text AS xid, backend_xmin::text AS xmin, left(query, 120) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (xact_start IS NOT NULL OR backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
"""


def test_no_transaction_is_open_while_graph_is_called(clean_db, database_url, emulator, dirs):
    lead = _new_lead(emulator.data, 1)
    _enqueue(clean_db, emulator.data, lead)
    cursor = change_log_tick(database_url).cursor
    emulator.latency_ms = LATENCY_MS
    seen: dict = {}

    def observe() -> None:
        deadline = time.monotonic() + 30
        while not _lead_gets(emulator, [lead["id"]]):  # recorded before the emulator sleeps
            if time.monotonic() > deadline:
                seen["error"] = "the run never called Graph for the lead"
                return
            time.sleep(0.02)
        in_call_until = time.monotonic() + LATENCY_MS / 1000 - 0.5
        time.sleep(0.2)  # let the run settle into the call
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            seen["transactions"] = conn.execute(_TRANSACTIONS).fetchall()
            # Another writer commits while the run waits on Graph ...
            seen["customer"] = conn.execute(
                "INSERT INTO customers (email) VALUES ('meanwhile@example.com') RETURNING id"
            ).fetchone()[0]
        # ... and the change-log sensor must see that write before the Graph call ends.
        seen["delivered"] = False
        while time.monotonic() < in_call_until and not seen["delivered"]:
            tick = change_log_tick(database_url, cursor)
            ids = [
                r.run_config["ops"]["customer_profiles_cache"]["config"]["customer_ids"]
                for r in tick.run_requests
            ]
            seen["delivered"] = any(seen["customer"] in (i or []) for i in ids)
            time.sleep(0.05)

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    result = dg.materialize([webhook_leads], resources=_resources(database_url, emulator, dirs))
    observer.join(timeout=60)

    assert result.success
    assert "error" not in seen, seen.get("error")
    assert seen["transactions"] == [], "a transaction was open during the Graph call"
    assert seen["delivered"], "a write made during the Graph call was held back from the sensor"
    (row,) = _inbox(clean_db)
    assert row.status == "processed" and row.error is None
    assert _inbox_claims_held(clean_db) == 0


def test_concurrent_runs_never_enrich_the_same_row(clean_db, database_url, emulator):
    leads = [_new_lead(emulator.data, n) for n in range(6)]
    for lead in leads:
        _enqueue(clean_db, emulator.data, lead)
    emulator.latency_ms = 200
    engine = get_engine(database_url)
    start = threading.Barrier(2)
    results, errors = [], []

    def run() -> None:
        try:
            with GraphApiResource(graph_url=emulator.url, ad_account_ids="act_1001").session() as g:
                start.wait()
                results.append(process_inbox(engine, g.client, batch_size=4))
        except Exception as exc:  # reported below, with the other run's outcome
            errors.append(exc)

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)

    assert not errors
    ids = [lead["id"] for lead in leads]
    assert _lead_gets(emulator, ids) == dict.fromkeys(ids, 1)  # each lead enriched exactly once
    assert sorted(r["claimed"] for r in results) == [2, 4]
    assert sum(r["processed"] for r in results) == 6
    assert {row.status for row in _inbox(clean_db)} == {"processed"}
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 6
    assert _inbox_claims_held(clean_db) == 0


def test_rejected_rows_are_never_claimed(clean_db, database_url, emulator, dirs):
    rejected, half_rejected = (_new_lead(emulator.data, n) for n in (1, 2))
    # As the webhook handler stores a rejected entry: processed and rejected at once ...
    _enqueue(
        clean_db,
        emulator.data,
        rejected,
        processed_at=dt.datetime.now(dt.UTC),
        rejected_at=dt.datetime.now(dt.UTC),
        error="bad entry",
    )
    # ... and one some other writer marked rejected only.
    _enqueue(
        clean_db, emulator.data, half_rejected, rejected_at=dt.datetime.now(dt.UTC), error="no"
    )
    resources = _resources(database_url, emulator, dirs)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(webhook_inbox_sensor(context), dg.SkipReason)

    result = dg.materialize([webhook_leads], resources=resources)
    assert result.success
    assert result.asset_materializations_for_node("webhook_leads")[0].metadata["claimed"].value == 0
    assert not _lead_gets(emulator, [rejected["id"], half_rejected["id"]])
    assert [(r.status, r.error) for r in _inbox(clean_db)] == [
        ("rejected", "bad entry"),
        ("rejected", "no"),
    ]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("invalid_token"),  # code 190
        # Code 102 (session key invalid) is a token error too, whatever the HTTP status says.
        Fault("transient", code=102),
    ],
    ids=["190", "102"],
)
def test_a_token_error_fails_the_run_and_leaves_the_rows_pending(
    clean_db, database_url, emulator, dirs, fault
):
    lead = _new_lead(emulator.data, 1)
    _enqueue(clean_db, emulator.data, lead)
    emulator.faults.add(fault)
    resources = _resources(database_url, emulator, dirs)

    result = dg.materialize([webhook_leads], resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "access token" in failure.step_failure_data.error.cause.message
    (row,) = _inbox(clean_db)
    assert (row.status, row.error) == ("pending", None)
    assert _inbox_claims_held(clean_db) == 0  # released: the next run may claim the row

    assert dg.materialize([webhook_leads], resources=resources).success
    assert _inbox(clean_db)[0].status == "processed"


def test_a_throttle_past_the_wait_budget_defers_the_batch(
    clean_db, database_url, emulator, dirs, monkeypatch
):
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "1")
    first, second = (_new_lead(emulator.data, n) for n in (1, 2))
    _enqueue(clean_db, emulator.data, first)
    _enqueue(clean_db, emulator.data, second)
    emulator.faults.add(Fault("throttle", code=80005, eta_minutes=5))  # leadgen use case
    resources = _resources(database_url, emulator, dirs)

    result = dg.materialize([webhook_leads], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("webhook_leads")[0].metadata
    assert (metadata["claimed"].value, metadata["retry_later"].value) == (2, 2)
    assert (metadata["processed"].value, metadata["failed"].value) == (0, 0)
    # Neither is given up on; the second was not even tried against the throttle.
    throttled, untried = _inbox(clean_db)
    assert throttled.status == "pending" and "throttl" in throttled.error.lower()
    assert (untried.status, untried.error) == ("pending", None)
    assert _lead_gets(emulator, [second["id"]]) == {}
    assert _inbox_claims_held(clean_db) == 0
