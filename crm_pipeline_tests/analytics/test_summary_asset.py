"""The analytics_summary asset: it writes a schema-valid summary.json with Markdown metadata,
and refuses to replace the file with a document that breaks the schema."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from crm_pipeline.cache import summary as summary_builder
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION
from crm_pipeline.cachefile import dumps, read_json
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline_tests.analytics.expected_summary import expected_summary
from crm_pipeline_tests.analytics.summary_helpers import published_validator


def _summary_file(dirs) -> Path:
    return dirs["cache"] / "analytics" / "summary.json"


def test_asset_writes_a_schema_valid_file_with_markdown_metadata(seeded, resources, dirs):
    result = dg.materialize([analytics_summary], resources=resources)
    assert result.success
    document = read_json(_summary_file(dirs))
    published_validator().validate(document)
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
