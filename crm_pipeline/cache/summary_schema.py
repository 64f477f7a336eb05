"""The published JSON Schema of summary.json, generated from the models in `summary_model.py`.

`docs/schemas/summary.schema.json` is this module's output; regenerate it after changing a model:

    .venv/bin/python -m crm_pipeline.cache.summary_schema > docs/schemas/summary.schema.json

A test fails when the file and the models disagree. The running asset validates against the
schema built here, so it works wherever the package is installed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from crm_pipeline.cache.summary_model import SummaryFile

SCHEMA_ID = "https://crm-pipeline.local/schemas/summary.schema.json"


class _WithoutFieldTitles(GenerateJsonSchema):
    # Pydantic titles every field after its name ("Orders Last 30 Days"): noise for readers,
    # who have the name and its description.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def summary_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the whole summary.json document, envelope included."""
    schema = SummaryFile.model_json_schema(
        mode="serialization", schema_generator=_WithoutFieldTitles
    )
    # The document's own properties first, the section definitions they refer to after them.
    definitions = schema.pop("$defs")
    return {
        "$schema": GenerateJsonSchema.schema_dialect,
        "$id": SCHEMA_ID,
        **schema,
        "$defs": definitions,
    }


def summary_schema_json() -> str:
    """The exact text of docs/schemas/summary.schema.json."""
    return json.dumps(summary_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(summary_schema_json())
