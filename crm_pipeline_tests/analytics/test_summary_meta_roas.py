"""summary.json's Meta-reported purchases, purchase value and meta_roas, beside the first-touch
ROAS from orders: overall and per campaign, from ad_insights_daily's purchase columns."""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text

from crm_pipeline_tests.analytics.expected_summary import expected_summary
from crm_pipeline_tests.analytics.summary_data import TODAY, at
from crm_pipeline_tests.analytics.summary_helpers import as_written, compute, published_validator


def _add_purchases(engine) -> None:
    """Meta-reported purchases: c1's ad on every fifth day, c3's ad on each of its days; c2's
    ad has none (meta_roas 0), c4 has no spend (meta_roas null)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ad_insights_daily SET purchases = 2, purchase_value = 39.98"
                " WHERE ad_id = 'a1' AND (date - CAST(:today AS date)) % 5 = 0"
            ),
            {"today": TODAY},
        )
        conn.execute(
            text(
                "UPDATE ad_insights_daily SET purchases = 1, purchase_value = 0.0150"
                " WHERE ad_id = 'a3'"
            )
        )


def _meta_totals(engine) -> dict[str, tuple[Decimal, Decimal, int]]:
    """campaign -> (purchase value, spend, purchases), summed by PostgreSQL from the rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT campaign_id, sum(purchase_value), sum(spend), sum(purchases)"
                " FROM ad_insights_daily GROUP BY campaign_id"
            )
        ).all()
    return {r[0]: (r[1], r[2], int(r[3])) for r in rows}


def _q4(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"), ROUND_HALF_UP)


def test_meta_roas_is_meta_purchase_value_over_spend(seeded):
    _add_purchases(seeded)
    summary = compute(seeded)
    assert summary == expected_summary(seeded, TODAY)
    published_validator().validate(as_written(summary))

    totals = _meta_totals(seeded)
    roas = {r["campaign_id"]: r for r in summary["roas"]["by_campaign"]}
    value, spend, purchases = totals["c1"]
    assert value == Decimal("39.98") * 9  # days -2..44 that are multiples of 5
    assert roas["c1"]["meta_purchases"] == purchases == 18
    assert roas["c1"]["meta_purchase_value"] == value
    assert roas["c1"]["meta_roas"] == _q4(value / spend) > 0
    assert roas["c3"]["meta_roas"] == _q4(totals["c3"][0] / totals["c3"][1]) == Decimal("1.5")
    assert roas["c2"]["meta_purchase_value"] == 0 and roas["c2"]["meta_roas"] == 0
    assert roas["c4"]["spend"] == 0 and roas["c4"]["meta_roas"] is None

    overall = summary["roas"]
    all_value = sum(v for v, _, _ in totals.values())
    assert overall["meta_purchase_value"] == all_value
    assert overall["meta_purchases"] == sum(n for _, _, n in totals.values())
    assert overall["meta_roas"] == _q4(all_value / overall["spend"])
    # Meta's view and the first-touch view are different figures.
    assert overall["roas"] is not None and overall["roas"] != overall["meta_roas"]


def test_meta_roas_stays_when_orders_use_several_currencies(seeded):
    _add_purchases(seeded)
    with seeded.begin() as conn:
        customer = conn.execute(text("SELECT min(id) FROM customers")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO orders (customer_id, amount, currency, status, created_at)"
                " VALUES (:c, 10, 'JPY', 'paid', :t)"
            ),
            {"c": customer, "t": at(-1)},
        )
    summary = compute(seeded)
    assert summary == expected_summary(seeded, TODAY)
    # Order revenue cannot be added across currencies; Meta's value is in the ad accounts'.
    assert summary["roas"]["roas"] is None and summary["roas"]["attributed_revenue"] is None
    assert summary["roas"]["meta_roas"] is not None and summary["roas"]["meta_roas"] > 0


def test_no_spend_means_no_meta_roas(clean_db):
    summary = compute(clean_db, dt.date(2026, 6, 15))
    assert summary["roas"]["meta_purchase_value"] == 0
    assert summary["roas"]["meta_purchases"] == 0
    assert summary["roas"]["meta_roas"] is None


def test_meta_roas_needs_no_attributed_customer(clean_db):
    """No leads or orders at all: no first-touch ROAS, but Meta's own still stands."""
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ad_insights_daily (account_id, campaign_id, adset_id, ad_id, date,"
                " spend, purchases, purchase_value) VALUES ('1', 'c9', 's9', 'a9', :d, 10, 3, 25)"
            ),
            {"d": TODAY},
        )
    roas = compute(clean_db)["roas"]
    assert roas["roas"] is None and roas["attributed_customers"] == 0
    assert (roas["meta_purchases"], roas["meta_roas"]) == (3, Decimal("2.5"))
    [campaign] = roas["by_campaign"]
    assert campaign["meta_roas"] == Decimal("2.5") and campaign["roas"] is None
