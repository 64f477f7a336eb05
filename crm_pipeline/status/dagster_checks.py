"""Failing asset checks, read from the Dagster instance's event log (`DAGSTER_HOME`).

The instance is `DAGSTER_HOME`, else the checkout's local one under `CRM_DATA_DIR/dagster`
when it exists (what `crm-pipeline dev`, `make demo` and `make ui` use); nothing is created.
The checks are found in the event log (the newest `DISCOVERY_LIMIT` check evaluations), not by
loading the definitions, so the probe does not import the code location. A check fails the
probe when its latest completed evaluation failed with severity ERROR; WARN ones are listed.

Dagster is imported here only, inside the function: the rest of the status is Dagster-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crm_pipeline.config import Settings
from crm_pipeline.status.cache_state import iso
from crm_pipeline.status.database import Problem, first_line, problem

DISCOVERY_LIMIT = 5000


def instance_home(settings: Settings) -> Path | None:
    """The instance folder to read, or None when no instance is configured."""
    if settings.dagster_home:
        return Path(settings.dagster_home)
    local = Path(settings.data_dir) / "dagster"
    return local if (local / "dagster.yaml").is_file() else None


def dagster_section(settings: Settings) -> tuple[dict[str, Any], list[Problem]]:
    """The `dagster` section: where the instance is and its failing checks."""
    home = instance_home(settings)
    section: dict[str, Any] = {
        "configured": home is not None,
        "home": str(home) if home else None,
        "readable": None,
        "error": None,
        "checks_seen": 0,
        "failing_checks": [],
    }
    if home is None:
        return section, []
    try:
        checks, seen = _failing_checks(home)
    except Exception as exc:  # a broken instance config, an unreachable DAGSTER_PG_URL
        section.update(readable=False, error=first_line(exc))
        return section, [
            problem("dagster_instance_unreadable", f"Dagster instance {home}: {section['error']}")
        ]
    section.update(readable=True, checks_seen=seen, failing_checks=checks)
    failing = [c for c in checks if c["severity"] == "ERROR"]
    if not failing:
        return section, []
    names = ", ".join(f"{c['asset']}:{c['check']}" for c in failing)
    return section, [problem("asset_checks_failing", f"failing asset checks: {names}")]


def _failing_checks(home: Path) -> tuple[list[dict[str, Any]], int]:
    """The checks whose latest completed evaluation failed, and how many checks were seen."""
    import dagster as dg
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        storage = instance.event_log_storage
        records = storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            limit=DISCOVERY_LIMIT,
            ascending=False,
        )
        keys = {
            r.event_log_entry.dagster_event.event_specific_data.asset_check_key for r in records
        }
        summaries = storage.get_asset_check_summary_records(list(keys)) if keys else {}
        failing = []
        for key, summary in sorted(summaries.items(), key=lambda kv: kv[0].to_user_string()):
            last = summary.last_completed_check_execution_record
            if last is None or last.status != AssetCheckExecutionRecordStatus.FAILED:
                continue
            evaluation = last.event.dagster_event.event_specific_data if last.event else None
            severity = getattr(getattr(evaluation, "severity", None), "value", "ERROR")
            failing.append(
                {
                    "asset": key.asset_key.to_user_string(),
                    "check": key.name,
                    "severity": severity,
                    "evaluated_at": _when(last.event.timestamp if last.event else None),
                    "run_id": last.run_id or None,
                }
            )
        return failing, len(keys)
    finally:
        instance.dispose()


def _when(timestamp: float | None) -> str | None:
    import datetime as dt

    return iso(dt.datetime.fromtimestamp(timestamp, dt.UTC)) if timestamp else None
