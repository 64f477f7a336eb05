"""summary.json: every KPI checked against an independent Python computation over raw rows.

The expected values below are computed from `SELECT *` of each table, one row at a time, with
none of the SQL in `kpis.py`: a wrong filter, join, window bound or ordering in a query shows
up as a mismatch. The published schema file is validated independently of the asset's own
validator.
"""

import datetime as dt
import json
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
from sqlalchemy import Engine, text

from crm_pipeline.cache import summary as summary_builder
from crm_pipeline.cache.kpis import (
    REVENUE_STATUSES,
    SUMMARY_SCHEMA_VERSION,
    compute_summary,
    summary_json_schema,
    summary_schema_json,
)
from crm_pipeline.cache.summary import SummarySchemaError, validate_summary
from crm_pipeline.cachefile import dumps, read_json
from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "summary.schema.json"
# A fixed day inside the demo orders' span (Feb..Nov 2026): orders exist before the 30-day
# window, inside it and after it (future-dated), so both window bounds are exercised.
TODAY = dt.date(2026, 6, 15)
UTC = dt.UTC


def _at(day_offset: int, hour: int = 12, minute: int = 0, second: int = 0) -> dt.datetime:
    day = TODAY + dt.timedelta(days=day_offset)
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def _published_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _as_written(payload: dict) -> dict:
    """The document as summary.json would carry it (envelope, JSON numbers)."""
    import orjson

    from crm_pipeline.cachefile import envelope

    return orjson.loads(
        dumps(envelope(payload, watermark="42", schema_version=SUMMARY_SCHEMA_VERSION))
    )


# --- test data ----------------------------------------------------------------------------------


def _seed_marketing(engine: Engine) -> None:
    """Campaigns, ads, daily insights and leads around TODAY, linked to demo customers."""
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all()
        a, b, c, d, e = ids[:5]
        bulk_upsert(
            conn,
            schema.campaigns,
            [
                {"id": "c1", "account_id": "act_1", "name": "Spring Sale"},
                {"id": "c2", "account_id": "act_1", "name": "Brand | Awareness"},
                {"id": "c4", "account_id": "act_2", "name": "No spend yet"},
            ],  # c3 has spend but no campaigns row: its name is null
        )
        bulk_upsert(
            conn,
            schema.ads,
            [
                {"id": "a1", "account_id": "act_1", "campaign_id": "c1", "adset_id": "s1"},
                {"id": "a2", "account_id": "act_1", "campaign_id": "c2", "adset_id": "s2"},
                {"id": "a3", "account_id": "act_2", "campaign_id": "c3", "adset_id": "s3"},
            ],
        )
        insights = []
        for i in range(-2, 45):  # two future days, today, and 44 days back
            day = TODAY - dt.timedelta(days=i)
            insights.append(
                {"account_id": "act_1", "campaign_id": "c1", "adset_id": "s1", "ad_id": "a1",
                 "date": day, "impressions": 1000 + i, "clicks": 30 + i % 7,
                 "spend": Decimal(1234 + 37 * i) / 1000, "leads": i % 3}
            )  # fmt: skip
            insights.append(
                {"account_id": "act_1", "campaign_id": "c2", "adset_id": "s2", "ad_id": "a2",
                 "date": day, "impressions": 500, "clicks": 5, "spend": Decimal("3.3333"),
                 "leads": 0}
            )  # fmt: skip
            if i % 10 == 0:
                insights.append(
                    {"account_id": "act_2", "campaign_id": "c3", "adset_id": "s3",
                     "ad_id": "a3", "date": day, "impressions": 10, "clicks": 1,
                     "spend": Decimal("0.0100"), "leads": 1}
                )  # fmt: skip
        bulk_upsert(conn, schema.ad_insights_daily, insights)
        lead = dict.fromkeys(("form_id", "ad_id", "campaign_id", "customer_id", "created_time"))
        bulk_upsert(
            conn,
            schema.leads,
            [
                # A's first touch: c1 through the ad (no campaign_id on the lead).
                {**lead, "id": "L1", "form_id": "f1", "ad_id": "a1", "customer_id": a,
                 "created_time": _at(-40)},
                {**lead, "id": "L2", "form_id": "f1", "campaign_id": "c2", "customer_id": a,
                 "created_time": _at(-5)},
                # B: an "other" lead naming c2, long before the window.
                {**lead, "id": "L3", "campaign_id": "c2", "customer_id": b,
                 "created_time": _at(-100)},
                # C: c3 via its ad, on the window's last day just before midnight UTC.
                {**lead, "id": "L4", "form_id": "f2", "ad_id": "a3", "customer_id": c,
                 "created_time": _at(0, 23, 30)},
                {**lead, "id": "L5", "form_id": "f1", "created_time": _at(-3)},
                # D: no campaign at all; exactly the window's first instant.
                {**lead, "id": "L6", "customer_id": d, "created_time": _at(-29, 0)},
                # E: c4 (no spend), no created_time: all of E's orders count.
                {**lead, "id": "L7", "form_id": "f3", "campaign_id": "c4", "customer_id": e},
                # One second before the window, and one in the future: both outside it.
                {**lead, "id": "L8", "form_id": "f1", "created_time": _at(-30, 23, 59, 59)},
                {**lead, "id": "L9", "created_time": _at(1)},
            ],
        )  # fmt: skip
        # Orders around A's first touch, and a customer whose tier sorts differently in "C" and
        # in natural-language collations.
        bulk_upsert(
            conn,
            schema.orders,
            [
                {"external_id": "T-1", "customer_id": a, "amount": Decimal("100.00"),
                 "currency": "USD", "status": "paid", "created_at": _at(-41)},
                {"external_id": "T-2", "customer_id": a, "amount": Decimal("250.05"),
                 "currency": "USD", "status": "shipped", "created_at": _at(-40, 12, 0, 1)},
                {"external_id": "T-3", "customer_id": a, "amount": Decimal("75.00"),
                 "currency": "USD", "status": "refunded", "created_at": _at(-2)},
                {"external_id": "T-4", "customer_id": d, "amount": Decimal("19.99"),
                 "currency": "USD", "status": "completed", "created_at": _at(-29, 0)},
            ],
            key=["external_id"],
        )  # fmt: skip
        bulk_upsert(
            conn, schema.customers, [{"email": "zed@example.com", "tier": "Zeta"}], key=["email"]
        )


@pytest.fixture
def seeded(clean_db):
    seed_demo_crm(clean_db)
    _seed_marketing(clean_db)
    return clean_db


# --- the independent computation ---------------------------------------------------------------


def _q(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _table(conn, name: str) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {name}"))]


def expected_summary(engine: Engine, today: dt.date) -> dict:
    """Every KPI from the raw rows, in plain Python."""
    with engine.connect() as conn:
        customers = _table(conn, "customers")
        orders = _table(conn, "orders")
        leads = _table(conn, "leads")
        insights = _table(conn, "ad_insights_daily")
        campaigns = {r["id"]: r["name"] for r in _table(conn, "campaigns")}
        ads = {r["id"]: r["campaign_id"] for r in _table(conn, "ads")}
        changes = _table(conn, "change_log")
    first = today - dt.timedelta(days=29)
    start = dt.datetime.combine(first, dt.time(), UTC)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), UTC)

    def recent(ts):
        return ts is not None and start <= ts < end

    def in_days(day):
        return first <= day <= today

    paid = [o for o in orders if o["status"] in REVENUE_STATUSES]
    by_cur = defaultdict(list)
    for o in paid:
        by_cur[o["currency"]].append(o)
    by_currency = [
        {
            "currency": cur,
            "total": sum(o["amount"] for o in rows),
            "orders": len(rows),
            "last_30_days": sum((o["amount"] for o in rows if recent(o["created_at"])), Decimal(0)),
            "orders_last_30_days": sum(recent(o["created_at"]) for o in rows),
            "average_order_value": _q(sum(o["amount"] for o in rows) / len(rows), 2),
        }
        for cur, rows in sorted(by_cur.items())
    ]
    single = len(by_currency) <= 1
    only = by_currency[0] if len(by_currency) == 1 else None
    months = defaultdict(lambda: [Decimal(0), 0])
    for o in paid:
        key = (o["created_at"].astimezone(UTC).strftime("%Y-%m"), o["currency"])
        months[key][0] += o["amount"]
        months[key][1] += 1
    tier_of = {c["id"]: c["tier"] for c in customers}
    tiers = defaultdict(lambda: [0, Decimal(0)])
    for c in customers:
        tiers[c["tier"]][0] += 1
    for o in paid:
        tiers[tier_of[o["customer_id"]]][1] += o["amount"]

    by_campaign = defaultdict(lambda: defaultdict(Decimal))
    for r in insights:
        row = by_campaign[r["campaign_id"]]
        for field in ("spend", "impressions", "clicks", "leads"):
            row[field] += r[field]
        row["spend_last_30_days"] += r["spend"] if in_days(r["date"]) else 0
    campaign_rows = sorted(
        (
            {
                "campaign_id": cid,
                "campaign_name": campaigns.get(cid),
                "spend": v["spend"],
                "spend_last_30_days": v["spend_last_30_days"],
                "impressions": v["impressions"],
                "clicks": v["clicks"],
                "leads": v["leads"],
                "cost_per_lead": _q(v["spend"] / v["leads"], 2) if v["leads"] else None,
            }
            for cid, v in by_campaign.items()
        ),
        key=lambda r: (-r["spend"], r["campaign_id"]),
    )
    spend_total = sum((r["spend"] for r in insights), Decimal(0))
    spend_30 = sum((r["spend"] for r in insights if in_days(r["date"])), Decimal(0))
    meta_leads = sum(r["leads"] for r in insights)
    meta_leads_30 = sum(r["leads"] for r in insights if in_days(r["date"]))

    day_counts = defaultdict(int)
    for lead in leads:
        if recent(lead["created_time"]):
            day_counts[lead["created_time"].astimezone(UTC).date()] += 1
    lead_ads = [lead for lead in leads if lead["form_id"] is not None]
    other = [lead for lead in leads if lead["form_id"] is None]

    # First touch: the earliest lead (created_time, nulls last, then id) naming a campaign.
    touches = {}
    for lead in sorted(
        leads, key=lambda x: (x["created_time"] is None, x["created_time"] or start, x["id"])
    ):
        campaign = lead["campaign_id"] or ads.get(lead["ad_id"])
        if lead["customer_id"] is not None and campaign and lead["customer_id"] not in touches:
            touches[lead["customer_id"]] = (campaign, lead["created_time"])
    attributed = defaultdict(lambda: {"customers": 0, "orders": 0, "revenue": Decimal(0)})
    for customer, (campaign, since) in touches.items():
        attributed[campaign]["customers"] += 1
        for o in paid:
            if o["customer_id"] == customer and (since is None or o["created_at"] >= since):
                attributed[campaign]["orders"] += 1
                attributed[campaign]["revenue"] += o["amount"]
    spend_of = {cid: v["spend"] for cid, v in by_campaign.items()}
    roas_rows = []
    for cid in sorted(set(attributed) | set(spend_of)):
        got, spent = attributed.get(cid), spend_of.get(cid, Decimal(0))
        roas_rows.append(
            {
                "campaign_id": cid,
                "campaign_name": campaigns.get(cid),
                "attributed_customers": got["customers"] if got else 0,
                "attributed_orders": got["orders"] if got else 0,
                "attributed_revenue": (got["revenue"] if got else 0) if single else None,
                "spend": spent,
                "roas": _q(got["revenue"] / spent, 4) if single and got and spent else None,
            }
        )
    attributed_revenue = sum((v["revenue"] for v in attributed.values()), Decimal(0))

    def newest(rows, field):
        values = [r[field] for r in rows if r[field] is not None]
        return max(values).astimezone(UTC).isoformat() if values else None

    return {
        "as_of": today.isoformat(),
        "window_30_days": {"first_day": first.isoformat(), "last_day": today.isoformat()},
        "revenue": {
            "statuses": sorted(REVENUE_STATUSES),
            "currency": only["currency"] if only else None,
            "total": (only["total"] if only else 0) if single else None,
            "last_30_days": (only["last_30_days"] if only else 0) if single else None,
            "orders": len(paid),
            "orders_last_30_days": sum(recent(o["created_at"]) for o in paid),
            "average_order_value": only["average_order_value"] if only else None,
            "by_month": [
                {"month": m, "currency": cur, "revenue": v[0], "orders": v[1]}
                for (m, cur), v in sorted(months.items())
            ],
            "by_currency": by_currency,
        },
        "customers": {
            "total": len(customers),
            "by_tier": [
                {"tier": t, "customers": v[0], "revenue": v[1] if single else None}
                for t, v in sorted(tiers.items())
            ],
        },
        "ad_spend": {
            "total": spend_total,
            "last_30_days": spend_30,
            "impressions": sum(r["impressions"] for r in insights),
            "clicks": sum(r["clicks"] for r in insights),
            "first_date": min(r["date"] for r in insights).isoformat() if insights else None,
            "last_date": max(r["date"] for r in insights).isoformat() if insights else None,
            "by_campaign": campaign_rows,
        },
        "leads": {
            "total": len(leads),
            "last_30_days": sum(recent(x["created_time"]) for x in leads),
            "by_day": [
                {
                    "date": (first + dt.timedelta(days=i)).isoformat(),
                    "leads": day_counts[first + dt.timedelta(days=i)],
                }
                for i in range(30)
            ],  # fmt: skip
            "by_source": [
                {
                    "source": "facebook_lead_ads",
                    "leads": len(lead_ads),
                    "last_30_days": sum(recent(x["created_time"]) for x in lead_ads),
                },
                {
                    "source": "other",
                    "leads": len(other),
                    "last_30_days": sum(recent(x["created_time"]) for x in other),
                },
            ],  # fmt: skip
            "meta_reported": {"total": meta_leads, "last_30_days": meta_leads_30},
            "cost_per_lead": {
                "total": _q(spend_total / meta_leads, 2) if meta_leads else None,
                "last_30_days": _q(spend_30 / meta_leads_30, 2) if meta_leads_30 else None,
            },
        },
        "roas": {
            "attributed_customers": len(touches),
            "attributed_revenue": attributed_revenue if single else None,
            "spend": spend_total,
            "roas": _q(attributed_revenue / spend_total, 4)
            if single and touches and spend_total
            else None,
            "by_campaign": roas_rows,
        },
        "freshness": {
            "ad_insights_synced_at": newest(insights, "synced_at"),
            "leads_created_time": newest(leads, "created_time"),
            "orders_created_at": newest(orders, "created_at"),
            "change_log_changed_at": newest(changes, "changed_at"),
        },
    }


def _compute(engine: Engine, today: dt.date = TODAY) -> dict:
    with engine.connect() as conn:
        return compute_summary(conn, today)


# --- tests --------------------------------------------------------------------------------------


def test_published_schema_file_is_the_one_the_asset_validates_against():
    assert SCHEMA_FILE.read_text() == summary_schema_json(), (
        "docs/schemas/summary.schema.json is out of date; regenerate it with\n"
        "  .venv/bin/python -c 'from crm_pipeline.cache.kpis import summary_schema_json"
        ' as s; open("docs/schemas/summary.schema.json", "w").write(s())\''
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SUMMARY_SCHEMA_VERSION == 2
    assert set(schema["required"]) >= {"generated_at", "watermark", "schema_version"}


def test_every_kpi_matches_an_independent_computation(seeded):
    summary = _compute(seeded)
    expected = expected_summary(seeded, TODAY)
    for section in expected:
        assert summary[section] == expected[section], section
    assert summary == expected
    _published_validator().validate(_as_written(summary))

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


def test_summary_is_deterministic(seeded):
    assert dumps(_compute(seeded)) == dumps(_compute(seeded))


def test_more_than_one_currency_nulls_only_cross_currency_sums(seeded):
    with seeded.begin() as conn:
        customer = conn.execute(text("SELECT min(id) FROM customers")).scalar_one()
        bulk_upsert(
            conn,
            schema.orders,
            [{"external_id": "EUR-1", "customer_id": customer, "amount": Decimal("10.50"),
              "currency": "EUR", "status": "paid", "created_at": _at(-1)}],
            key=["external_id"],
        )  # fmt: skip
    summary = _compute(seeded)
    assert summary == expected_summary(seeded, TODAY)
    revenue = summary["revenue"]
    assert revenue["total"] is revenue["currency"] is revenue["average_order_value"] is None
    assert [c["currency"] for c in revenue["by_currency"]] == ["EUR", "USD"]
    assert {"EUR", "USD"} <= {m["currency"] for m in revenue["by_month"]}
    assert all(t["revenue"] is None for t in summary["customers"]["by_tier"])
    assert summary["roas"]["roas"] is None
    _published_validator().validate(_as_written(summary))


def test_empty_database_gives_a_valid_summary_of_zeros_and_nulls(clean_db):
    summary = _compute(clean_db)
    assert summary == expected_summary(clean_db, TODAY)
    _published_validator().validate(_as_written(summary))
    assert summary["revenue"]["total"] == 0 and summary["revenue"]["orders"] == 0
    assert summary["revenue"]["average_order_value"] is None
    assert summary["customers"] == {"total": 0, "by_tier": []}
    assert summary["ad_spend"]["total"] == 0 and summary["ad_spend"]["by_campaign"] == []
    assert [d["leads"] for d in summary["leads"]["by_day"]] == [0] * 30
    assert summary["leads"]["cost_per_lead"] == {"total": None, "last_30_days": None}
    assert summary["roas"]["roas"] is None and summary["roas"]["by_campaign"] == []
    assert set(summary["freshness"].values()) == {None}


@pytest.fixture
def resources(database_url, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }


def _summary_file(dirs) -> Path:
    return dirs["cache"] / "analytics" / "summary.json"


def test_asset_writes_a_schema_valid_file_with_markdown_metadata(seeded, resources, dirs):
    result = dg.materialize([analytics_summary], resources=resources)
    assert result.success
    document = read_json(_summary_file(dirs))
    _published_validator().validate(document)
    assert document["schema_version"] == SUMMARY_SCHEMA_VERSION
    today = dt.date.fromisoformat(document["as_of"])
    expected = json.loads(dumps(expected_summary(seeded, today)))
    assert {k: v for k, v in document.items() if k not in {"generated_at", "watermark"}} == {
        **expected,
        "schema_version": SUMMARY_SCHEMA_VERSION,
    }

    (materialization,) = result.asset_materializations_for_node("analytics_summary")
    metadata = materialization.metadata
    for name in ("kpis", "customers_by_tier", "campaigns", "revenue_by_month", "freshness"):
        assert isinstance(metadata[name], dg.MarkdownMetadataValue), name
    kpis = metadata["kpis"].value
    assert kpis.startswith("| KPI |")
    assert f"| customers | {document['customers']['total']} |" in kpis
    assert "Brand \\| Awareness" in metadata["campaigns"].value  # pipes escaped
    assert "| Zeta | 1 |" in metadata["customers_by_tier"].value


def test_a_schema_invalid_summary_is_rejected_and_the_old_file_kept(
    seeded, resources, dirs, monkeypatch
):
    assert dg.materialize([analytics_summary], resources=resources).success
    before = _summary_file(dirs).read_bytes()

    real = summary_builder.compute_summary

    def broken(conn, today):
        summary = real(conn, today)
        summary["revenue"]["total"] = "a lot"
        summary["leads"]["by_source"].append({"source": "carrier pigeon", "leads": 1})
        return summary

    monkeypatch.setattr(summary_builder, "compute_summary", broken)
    result = dg.materialize([analytics_summary], resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert "SummarySchemaError" in message
    assert "$.revenue.total" in message and "$.leads.by_source[2]" in message
    assert "previous summary.json was left in place" in message
    assert _summary_file(dirs).read_bytes() == before
    # No temporary file left behind; the lock file beside it serialises writers.
    names = sorted(p.name for p in _summary_file(dirs).parent.iterdir())
    assert names == [".summary.json.lock", "summary.json"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("freshness"),
        lambda d: d.__setitem__("unexpected", 1),
        lambda d: d.__setitem__("schema_version", 1),
        lambda d: d["revenue"]["by_month"].append({"month": "2026-13x", "revenue": 1}),
        lambda d: d["leads"].__setitem__("cost_per_lead", {"total": "1.00", "last_30_days": None}),
        lambda d: d["freshness"].__setitem__("orders_created_at", "yesterday"),
        lambda d: d.__setitem__("as_of", "2026-02-30"),
    ],
)
def test_validator_rejects_documents_that_break_the_contract(mutate):
    from crm_pipeline.cachefile import envelope

    payload = json.loads(json.dumps(_EMPTY_PAYLOAD))
    validate_summary(envelope(payload, watermark="7", schema_version=SUMMARY_SCHEMA_VERSION))
    document = envelope(payload, watermark="7", schema_version=SUMMARY_SCHEMA_VERSION)
    mutate(document)
    with pytest.raises(SummarySchemaError, match="does not match its schema"):
        validate_summary(document)


def _empty_payload() -> dict:
    window = [
        {"date": (TODAY - dt.timedelta(days=29 - i)).isoformat(), "leads": 0} for i in range(30)
    ]
    return {
        "as_of": TODAY.isoformat(),
        "window_30_days": {"first_day": window[0]["date"], "last_day": TODAY.isoformat()},
        "revenue": {
            "statuses": sorted(REVENUE_STATUSES), "currency": None, "total": 0,
            "last_30_days": 0, "orders": 0, "orders_last_30_days": 0,
            "average_order_value": None, "by_month": [], "by_currency": [],
        },
        "customers": {"total": 0, "by_tier": []},
        "ad_spend": {
            "total": 0, "last_30_days": 0, "impressions": 0, "clicks": 0,
            "first_date": None, "last_date": None, "by_campaign": [],
        },
        "leads": {
            "total": 0, "last_30_days": 0, "by_day": window,
            "by_source": [
                {"source": "facebook_lead_ads", "leads": 0, "last_30_days": 0},
                {"source": "other", "leads": 0, "last_30_days": 0},
            ],
            "meta_reported": {"total": 0, "last_30_days": 0},
            "cost_per_lead": {"total": None, "last_30_days": None},
        },
        "roas": {
            "attributed_customers": 0, "attributed_revenue": 0, "spend": 0, "roas": None,
            "by_campaign": [],
        },
        "freshness": dict.fromkeys(
            ("ad_insights_synced_at", "leads_created_time", "orders_created_at",
             "change_log_changed_at")
        ),
    }  # fmt: skip


_EMPTY_PAYLOAD = _empty_payload()


def test_schema_describes_every_field_for_analysts():
    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node:
                for name, child in node["properties"].items():
                    assert child.get("description"), f"{path}.{name} has no description"
                    walk(child, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(summary_json_schema(), "$")
