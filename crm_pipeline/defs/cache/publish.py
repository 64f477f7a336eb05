"""Materialisation metadata of a rebuilt cache file."""

from typing import Any

import dagster as dg

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
