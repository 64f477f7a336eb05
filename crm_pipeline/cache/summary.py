"""`analytics/summary.json`: the KPIs (`kpis.py`), validated against their published schema
(`summary_schema.py`) before writing."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import jsonschema
import orjson
from sqlalchemy import Connection

from crm_pipeline.cache.kpis import compute_summary
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION
from crm_pipeline.cache.summary_schema import summary_json_schema
from crm_pipeline.cachefile import dumps, envelope
from crm_pipeline.db.changelog import reflected_watermark

SUMMARY_FILE = "analytics/summary.json"
# What `compute_summary` reads (`change_log` too, for the freshness block: not a source). It
# reads most of them through their KPI rollups (`db/rollups.py`), which triggers update in each
# writer's own transaction: a change to any of these tables is a change to the summary.
READS = ("customers", "orders", "leads", "ad_insights_daily", "campaigns", "ads")
_MAX_REPORTED_ERRORS = 10


class SummarySchemaError(ValueError):
    """summary.json does not match docs/schemas/summary.schema.json; nothing was written."""


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = summary_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_summary(document: dict[str, Any]) -> None:
    """Raise SummarySchemaError unless `document`, as it would be written, matches the schema.

    The check runs on the serialised JSON, not on the Python objects, so it sees exactly what a
    reader will.
    """
    errors = sorted(
        _validator().iter_errors(orjson.loads(dumps(document))),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        shown = "\n".join(
            f"  - at {e.json_path}: {e.message[:300]}" for e in errors[:_MAX_REPORTED_ERRORS]
        )
        more = len(errors) - _MAX_REPORTED_ERRORS
        raise SummarySchemaError(
            f"analytics summary does not match its schema (schema_version "
            f"{SUMMARY_SCHEMA_VERSION}, docs/schemas/summary.schema.json); the previous "
            f"summary.json was left in place. {len(errors)} error(s):\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )


def build_validated_summary(conn: Connection, today: dt.date | None = None) -> dict[str, Any]:
    """Compute the KPIs and validate the document they make before anything is written.

    The watermark comes from the same snapshot, so the envelope checked here is the one that is
    published (only `generated_at` is stamped again).
    """
    payload = compute_summary(conn, today or dt.datetime.now(dt.UTC).date())
    validate_summary(
        envelope(
            payload,
            watermark=reflected_watermark(conn),
            schema_version=SUMMARY_SCHEMA_VERSION,
        )
    )
    return payload
