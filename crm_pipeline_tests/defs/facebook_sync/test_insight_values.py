"""The values marketers ask for, end to end: frequency, action_values and conversions land in
Parquet and PostgreSQL, purchases and their value are lifted out, deleted ads keep their history,
and files landed before these fields still load."""

import datetime as dt
from decimal import Decimal

import dagster as dg
import orjson
import pyarrow.parquet as pq
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.facebook.fields import AD_EFFECTIVE_STATUSES, INSIGHT_FIELDS
from crm_pipeline.facebook.transforms import to_arrow
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    ACCOUNTS,
    DAYS,
    is_account_totals,
    resources_for,
    snapshot,
    sync,
)

FIRST, LAST = (dt.date.fromisoformat(d) for d in (DAYS[0], DAYS[-1]))
# What the table held before migration 0006: files landed then have only these columns.
OLD_FIELDS = tuple(
    f for f in INSIGHT_FIELDS if f not in ("frequency", "action_values", "conversions")
)


def _entry(items: list[dict] | None, action_type: str) -> str | None:
    return next((a["value"] for a in items or [] if a["action_type"] == action_type), None)


def _expected(row: dict) -> tuple:
    """What ad_insights_daily must hold for one of Meta's rows, computed from the wire row."""
    purchases = _entry(row.get("actions"), "purchase")
    value = _entry(row.get("action_values"), "purchase")
    return (
        row["ad_id"],
        row["date_start"],
        Decimal(row["frequency"]),
        row.get("action_values"),
        row.get("conversions"),
        int(purchases or 0),
        Decimal(value or 0),
    )


def _stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT ad_id, date::text, frequency, action_values, conversions, purchases,"
                " purchase_value FROM ad_insights_daily ORDER BY date, ad_id"
            )
        ).all()
    return [tuple(r) for r in rows]


def test_values_land_whole_and_purchases_are_lifted_out(clean_db, database_url, dirs):
    data = EmulatorData()
    # An ad deleted since it spent: its history must not vanish from the account's insights.
    deleted = data.ads(ACCOUNTS[0])[0]["id"]
    data.set_status(deleted, "DELETED", dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    with GraphEmulator(data) as server:
        sync(database_url, server, dirs)
        requests = [r for r in server.requests if r.path.endswith("/insights")]
    meta = sorted(
        (r for a in ACCOUNTS for r in data.insights(a, FIRST, LAST)),
        key=lambda r: (r["date_start"], r["ad_id"]),
    )
    purchase_rows = [r for r in meta if r.get("action_values")]
    assert purchase_rows, "the emulator data has purchase days in the range"
    # Both purchase types carry the same purchase: counted once, never added.
    assert all(_entry(r["actions"], "offsite_conversion.fb_pixel_purchase") for r in purchase_rows)
    assert _stored(clean_db) == sorted(map(_expected, meta), key=lambda r: (r[1], r[0]))
    assert any(r[0] == deleted for r in _stored(clean_db))

    # Every insights read asks for ads of every status, the ad-level one for the new fields.
    for request in requests:
        status = orjson.loads(request.params["filtering"])[0]
        assert status == {
            "field": "ad.effective_status",
            "operator": "IN",
            "value": list(AD_EFFECTIVE_STATUSES),
        }
    ad_level = [r for r in requests if not is_account_totals(r)]
    assert ad_level and all(r.params["fields"] == ",".join(INSIGHT_FIELDS) for r in ad_level)

    # The raw file holds exactly the fields asked for, the lists kept whole as JSON text.
    row = purchase_rows[0]
    path = lake.raw_path(
        dirs["data"], "fb_ad_insights", f"account=act_{row['account_id']}/date={row['date_start']}"
    )
    table = pq.read_table(path)
    assert tuple(table.column_names) == INSIGHT_FIELDS
    landed = next(r for r in table.to_pylist() if r["ad_id"] == row["ad_id"])
    for field in ("action_values", "conversions", "actions"):
        assert orjson.loads(landed[field]) == row[field]
    assert landed["frequency"] == row["frequency"]


def test_a_second_sync_changes_nothing(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs)
        before = snapshot(clean_db)
        with clean_db.connect() as conn:
            changes = conn.execute(text("SELECT count(*) FROM change_log")).scalar_one()
        sync(database_url, server, dirs)
    assert before["ad_insights_daily"] and before["ad_account_insights_daily"]
    assert snapshot(clean_db) == before
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() == changes


def test_files_landed_before_the_new_fields_still_load(clean_db, database_url, dirs):
    """A raw file of the old shape (no frequency, action_values, conversions; no account
    totals beside it) loads with NULL values and no purchase value."""
    data = EmulatorData()
    account, day = ACCOUNTS[0], dt.date.fromisoformat(DAYS[0])
    rows = data.insights(account, day, day)
    partition = f"account={account}/date={day.isoformat()}"
    lake.land_partition(dirs["data"], "fb_ad_insights", partition, to_arrow(rows, OLD_FIELDS))
    result = dg.materialize(
        [ad_insights_daily],
        partition_key=str(insights_partition_key(account, day.isoformat())),
        resources=resources_for(database_url, "http://127.0.0.1:9", dirs),
    )
    assert result.success
    with clean_db.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT count(*), count(frequency), count(action_values), count(conversions),"
                " sum(purchases), sum(purchase_value), sum(leads) FROM ad_insights_daily"
            )
        ).one()
    # `actions` was landed then too: its leads and purchases count; no value without
    # action_values.
    leads = sum(int(_entry(r.get("actions"), "lead") or 0) for r in rows)
    purchases = sum(int(_entry(r.get("actions"), "purchase") or 0) for r in rows)
    assert purchases > 0, "the day has purchases in actions"
    assert tuple(stored) == (len(rows), 0, 0, 0, purchases, 0, leads)
    # Nothing to compare with: the check says so rather than failing or inventing totals.
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "matches_account_totals"
    ]
    assert check.passed
    assert check.metadata["unchecked_account_days"].value == [f"{account}/{day.isoformat()}"]
