"""Helpers shared by the summary.json tests."""

import datetime as dt
import json
from pathlib import Path

import jsonschema
import orjson
from sqlalchemy import Engine

from crm_pipeline.cache.kpis import compute_summary
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION
from crm_pipeline.cachefile import dumps, envelope
from crm_pipeline_tests.analytics.summary_data import TODAY

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "summary.schema.json"


def published_validator() -> jsonschema.protocols.Validator:
    """A validator of the published schema file, independent of the asset's own validator."""
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def as_written(payload: dict) -> dict:
    """The document as summary.json would carry it (envelope, JSON numbers)."""
    return orjson.loads(
        dumps(envelope(payload, watermark="42", schema_version=SUMMARY_SCHEMA_VERSION))
    )


def compute(engine: Engine, today: dt.date = TODAY) -> dict:
    """The summary payload of `engine`'s database as of `today`."""
    with engine.connect() as conn:
        return compute_summary(conn, today)
