"""summary.json: every KPI checked against an independent Python computation over raw rows
(`expected_summary.py`), and validated against the published schema file independently of the
asset's own validator."""

from decimal import Decimal

from sqlalchemy import text

from crm_pipeline.cachefile import dumps
from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline_tests.analytics.expected_summary import expected_summary
from crm_pipeline_tests.analytics.summary_data import TODAY, at
from crm_pipeline_tests.analytics.summary_helpers import as_written, compute, published_validator


def test_every_kpi_matches_an_independent_computation(seeded):
    summary = compute(seeded)
    expected = expected_summary(seeded, TODAY)
    for section in expected:
        assert summary[section] == expected[section], section
    assert summary == expected
    published_validator().validate(as_written(summary))

    # The fixture is rich enough that every KPI is exercised, not vacuously equal.
    assert summary["revenue"]["orders_last_30_days"] > 0
    assert summary["revenue"]["orders"] > summary["revenue"]["orders_last_30_days"]
    assert [t["tier"] for t in summary["customers"]["by_tier"]][0] == "Zeta"  # byte order
    roas = {r["campaign_id"]: r for r in summary["roas"]["by_campaign"]}
    assert list(roas) == ["c1", "c2", "c3", "c4"]
    assert roas["c1"]["attributed_customers"] == 1  # A, first touch; not counted again for c2
    assert roas["c1"]["roas"] is not None and roas["c1"]["attributed_revenue"] > 0
    assert roas["c2"]["attributed_customers"] == 1  # B only
    assert roas["c3"]["campaign_name"] is None
    assert roas["c4"]["spend"] == 0 and roas["c4"]["roas"] is None
    assert summary["roas"]["roas"] is not None
    campaigns = summary["ad_spend"]["by_campaign"]
    assert [c["campaign_id"] for c in campaigns] == ["c2", "c1", "c3"]  # by spend
    assert {c["campaign_id"]: c["cost_per_lead"] for c in campaigns}["c2"] is None
    by_day = summary["leads"]["by_day"]
    assert len(by_day) == 30 and by_day[0]["date"] == "2026-05-17"
    assert by_day[0]["leads"] == 1 and by_day[-1]["leads"] == 1  # L6 and L4, the bounds
    assert {s["source"]: s["leads"] for s in summary["leads"]["by_source"]} == {
        "facebook_lead_ads": 6,
        "other": 3,
    }
    assert summary["leads"]["last_30_days"] == 4  # L2, L4, L5, L6
    assert summary["leads"]["cost_per_lead"]["last_30_days"] is not None
    assert all(v is not None for v in summary["freshness"].values())


def test_money_keeps_every_stored_digit_as_a_json_number(seeded):
    written = dumps(compute(seeded)).decode()
    # Spend is numeric(…, 4) in PostgreSQL: trailing zeros are digits the reader is owed.
    assert '"spend": 156.6651' in written and '"spend_last_30_days": 99.9990' in written
    assert '"spend": 0.0500' in written


def test_summary_is_deterministic(seeded):
    assert dumps(compute(seeded)) == dumps(compute(seeded))


def test_more_than_one_currency_nulls_only_cross_currency_sums(seeded):
    with seeded.begin() as conn:
        customer = conn.execute(text("SELECT min(id) FROM customers")).scalar_one()
        bulk_upsert(
            conn,
            schema.orders,
            [{"external_id": "EUR-1", "customer_id": customer, "amount": Decimal("10.50"),
              "currency": "EUR", "status": "paid", "created_at": at(-1)}],
            key=["external_id"],
        )  # fmt: skip
    summary = compute(seeded)
    assert summary == expected_summary(seeded, TODAY)
    revenue = summary["revenue"]
    assert revenue["total"] is revenue["currency"] is revenue["average_order_value"] is None
    assert [c["currency"] for c in revenue["by_currency"]] == ["EUR", "USD"]
    assert {"EUR", "USD"} <= {m["currency"] for m in revenue["by_month"]}
    assert all(t["revenue"] is None for t in summary["customers"]["by_tier"])
    assert summary["roas"]["roas"] is None
    assert all(r["attributed_revenue"] is r["roas"] is None for r in summary["roas"]["by_campaign"])
    published_validator().validate(as_written(summary))


def test_empty_database_gives_a_valid_summary_of_zeros_and_nulls(clean_db):
    summary = compute(clean_db)
    assert summary == expected_summary(clean_db, TODAY)
    published_validator().validate(as_written(summary))
    assert summary["revenue"]["total"] == 0 and summary["revenue"]["orders"] == 0
    assert summary["revenue"]["average_order_value"] is None
    assert summary["customers"] == {"total": 0, "by_tier": []}
    assert summary["ad_spend"]["total"] == 0 and summary["ad_spend"]["by_campaign"] == []
    assert [d["leads"] for d in summary["leads"]["by_day"]] == [0] * 30
    assert summary["leads"]["cost_per_lead"] == {"total": None, "last_30_days": None}
    assert summary["roas"]["roas"] is None and summary["roas"]["by_campaign"] == []
    assert set(summary["freshness"].values()) == {None}
