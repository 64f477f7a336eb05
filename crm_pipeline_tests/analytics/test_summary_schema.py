"""The published schema of summary.json: generated from the models, strict, described for
analysts, and enforced by `validate_summary`."""

import datetime as dt
import json

import jsonschema
import pytest

from crm_pipeline.cache.kpis import REVENUE_STATUSES
from crm_pipeline.cache.summary import SummarySchemaError, validate_summary
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION
from crm_pipeline.cache.summary_schema import summary_schema_json
from crm_pipeline.cachefile import envelope
from crm_pipeline_tests.analytics.summary_data import TODAY
from crm_pipeline_tests.analytics.summary_helpers import SCHEMA_FILE

REGENERATE = (
    ".venv/bin/python -m crm_pipeline.cache.summary_schema > docs/schemas/summary.schema.json"
)


def _published() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def _nodes(schema: dict):
    """(path, sub-schema) of every value the document can hold, `$ref`s followed."""
    definitions = schema.get("$defs", {})

    def visit(node, path):
        if "$ref" in node:
            target = definitions[node["$ref"].removeprefix("#/$defs/")]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        yield path, node
        for name, child in node.get("properties", {}).items():
            yield from visit(child, f"{path}.{name}")
        if "items" in node:
            yield from visit(node["items"], f"{path}[]")
        for option in node.get("anyOf", []):
            yield from visit(option, path)

    yield from visit(schema, "$")


def test_published_schema_file_is_generated_from_the_models():
    assert SCHEMA_FILE.read_text() == summary_schema_json(), (
        f"docs/schemas/summary.schema.json is out of date; regenerate it with\n  {REGENERATE}"
    )
    schema = _published()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    properties = schema["properties"]
    assert properties["schema_version"]["const"] == SUMMARY_SCHEMA_VERSION == 4
    assert set(schema["required"]) >= {"generated_at", "watermark", "schema_version"}
    assert properties["generated_at"]["format"] == "date-time"
    assert properties["watermark"] == {**properties["watermark"], "type": "string"}


def test_every_object_in_the_schema_is_closed_and_fully_required():
    objects = [(path, n) for path, n in _nodes(_published()) if n.get("type") == "object"]
    assert len(objects) > 15  # the document, its sections and their list items
    for path, node in objects:
        assert node.get("additionalProperties") is False, f"{path} allows unknown keys"
        assert sorted(node["required"]) == sorted(node["properties"]), f"{path}: optional keys"


def test_schema_describes_every_field_for_analysts():
    for path, node in _nodes(_published()):
        for name, child in node.get("properties", {}).items():
            assert child.get("description"), f"{path}.{name} has no description"


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
            "by_day": [{"date": d["date"], "spend": 0, "leads": 0} for d in window],
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
            "meta_purchases": 0, "meta_purchase_value": 0, "meta_roas": None,
            "by_campaign": [],
        },
        "freshness": dict.fromkeys(
            ("ad_insights_synced_at", "leads_created_time", "orders_created_at",
             "change_log_changed_at")
        ),
    }  # fmt: skip


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
        # Inside the sections too (their schemas are `$ref`s): a missing, an unknown, a
        # negative count, an unknown lead source.
        lambda d: d["customers"].pop("total"),
        lambda d: d["window_30_days"].__setitem__("extra", 1),
        lambda d: d["leads"]["meta_reported"].__setitem__("total", -1),
        lambda d: d["leads"]["by_source"][1].__setitem__("source", "carrier pigeon"),
        lambda d: d.__setitem__("watermark", "12a"),
    ],
)
def test_validator_rejects_documents_that_break_the_contract(mutate):
    document = envelope(_empty_payload(), watermark="7", schema_version=SUMMARY_SCHEMA_VERSION)
    validate_summary(document)
    mutate(document)
    with pytest.raises(SummarySchemaError, match="does not match its schema"):
        validate_summary(document)
