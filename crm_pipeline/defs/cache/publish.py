"""Materialisation metadata of a rebuilt cache file."""

from typing import Any

import dagster as dg

from crm_pipeline.cache.charts import chart_markdown
from crm_pipeline.cache.rebuild import Rebuilt


def rebuilt_metadata(rebuilt: Rebuilt, **extra: Any) -> dict[str, Any]:
    """Metadata common to every single cache file, plus `extra`."""
    outcome = rebuilt.outcome
    return {
        "path": dg.MetadataValue.path(str(outcome.path)),
        "files": int(outcome.written),
        # False when a newer file was already published (by the worker, say): it was kept.
        "published": outcome.written,
        "bytes": outcome.size,
        "watermark": rebuilt.watermark,
        "build_seconds": round(rebuilt.build_seconds, 3),
        "write_seconds": round(rebuilt.write_seconds, 3),
        **extra,
    }


def chart_metadata(charts: dict[str, bytes]) -> dict[str, dg.MetadataValue]:
    """Each chart as Markdown with its PNG inline (a data URI), which the Dagster UI renders."""
    return {
        key: dg.MetadataValue.md(chart_markdown(key.removeprefix("chart_").replace("_", " "), png))
        for key, png in charts.items()
    }
