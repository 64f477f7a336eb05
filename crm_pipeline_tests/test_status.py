"""`crm-pipeline status`: a probe that says what needs attention, against a real PostgreSQL."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from crm_pipeline.cache.rebuild import rebuild_all_customers, rebuild_file, rebuild_index
from crm_pipeline.cache.registry import FILES
from crm_pipeline.config import load_settings
from crm_pipeline.db.changelog import reflected_watermark
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.db.worker_state import beat
from crm_pipeline.status import collect, run_status

pytestmark = pytest.mark.db

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
WORKER = "cache-worker"  # CRM_CACHE_WORKER_NAME's default

# The documented shape of `--json` (README, "Status"): the keys of each part.
TOP = {
    "status_version",
    "checked_at",
    "ok",
    "problems",
    "database",
    "cache",
    "cache_worker",
    "sync",
    "webhooks",
    "dagster",
}
DATABASE = {"url", "reachable", "error", "revision", "head", "at_head", "demo_database"}
CACHE = {"location", "grace_seconds", "error", "files"}
LAG = {"pending_changes", "oldest_pending_at", "behind", "stale"}
SINGLE_FILE = LAG | {
    "asset",
    "path",
    "per_customer",
    "exists",
    "generated_at",
    "age_seconds",
    "watermark",
    "schema_version",
    "schema_current",
}
CUSTOMER_FILES = LAG | {
    "asset",
    "path",
    "per_customer",
    "files",
    "read",
    "oldest_generated_at",
    "oldest_age_seconds",
    "oldest_watermark",
    "customers_checked",
    "customers_behind",
    "sample_behind",
}
INDEX_FILE = SINGLE_FILE | {
    "segments",
    "customers",
    "bytes",
    "oldest_segment_watermark",
    "customers_checked",
    "customers_behind",
    "sample_behind",
}
WORKER_KEYS = {
    "name",
    "seen",
    "alive",
    "heartbeat_age_seconds",
    "stale_after_seconds",
    "host",
    "pid",
    "watermark",
    "lag_changes",
    "lag_seconds",
}
SYNC = {"insights", "streams", "interrupted_cli_syncs", "raw_landings"}
WEBHOOKS = {
    "pending",
    "oldest_pending_at",
    "rejected",
    "rejected_recent",
    "recent_hours",
    "newest_rejected_at",
}
DAGSTER = {"configured", "home", "readable", "error", "checks_seen", "failing_checks"}


@pytest.fixture
def env(database_url, dirs) -> dict[str, str]:
    return {
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(dirs["cache"]),
        "CRM_DATA_DIR": str(dirs["data"]),
    }


@pytest.fixture
def healthy(clean_db, dirs, env) -> dict[str, str]:
    """Customers and orders, every cache file built after the last write, a live worker."""
    with clean_db.begin() as conn:
        conn.execute(
            text("INSERT INTO customers (name, email) VALUES ('A', 'a@x.io'), ('B', 'b@x.io')")
        )
        conn.execute(
            text(
                "INSERT INTO orders (customer_id, amount, currency, status)"
                " VALUES (1, 10, 'USD', 'paid')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sync_state (stream, scope, state) VALUES"
                " ('campaigns', '1001', '{\"updated_time\": \"2026-06-01T00:00:00+0000\"}')"
            )
        )
    _build_cache(clean_db, dirs["cache"])
    _beat(clean_db)
    return env


def _build_cache(engine, cache_dir) -> None:
    with read_snapshot(engine) as conn:
        rebuild_all_customers(conn, cache_dir)
        rebuild_index(conn, cache_dir, None)
    for file in FILES:
        if not file.targeted:
            rebuild_file(engine, cache_dir, file)


def _beat(engine, age_seconds: int = 0) -> None:
    with engine.begin() as conn:
        beat(conn, WORKER, reflected_watermark(conn), starting=True)
        conn.execute(
            text(
                "UPDATE cache_worker_state SET heartbeat_at = now() - make_interval(secs => :a)"
                " WHERE name = :n"
            ),
            {"a": age_seconds, "n": WORKER},
        )


def _status(env: dict[str, str]) -> tuple[int, dict]:
    out = io.StringIO()
    code = run_status(load_settings(env), as_json=True, out=out)
    return code, json.loads(out.getvalue())


def _checks(document: dict) -> list[str]:
    return sorted(p["check"] for p in document["problems"])


def _file(document: dict, path: str) -> dict:
    return next(f for f in document["cache"]["files"] if f["path"] == path)


def test_a_healthy_pipeline_exits_zero_with_the_documented_json(healthy):
    code, document = _status(healthy)
    assert (code, document["problems"], document["ok"]) == (0, [], True)
    assert set(document) == TOP and document["status_version"] == 1
    assert set(document["database"]) == DATABASE and document["database"]["at_head"]
    assert set(document["cache"]) == CACHE
    assert [f["asset"] for f in document["cache"]["files"]] == [f.asset for f in FILES]
    for entry in document["cache"]["files"]:
        keys = CUSTOMER_FILES if entry["per_customer"] else SINGLE_FILE
        assert set(entry) == (INDEX_FILE if entry["path"] == "customers/index/" else keys)
        assert entry["behind"] is False and entry["stale"] is False
    assert _file(document, "customers/")["files"] == 2
    index = _file(document, "customers/index/")
    assert (index["segments"], index["customers"], index["exists"]) == (1, 2, True)
    assert set(document["cache_worker"]) == WORKER_KEYS and document["cache_worker"]["alive"]
    assert set(document["sync"]) == SYNC
    assert document["sync"]["streams"][0]["stream"] == "campaigns"
    assert set(document["webhooks"]) == WEBHOOKS
    assert set(document["dagster"]) == DAGSTER and not document["dagster"]["configured"]


def test_a_file_behind_a_change_past_the_grace_is_a_problem(healthy, clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE customers SET name = 'A2' WHERE id = 1"))
    code, document = _status(healthy)
    assert code == 0, document["problems"]  # seconds old: the worker is on it
    assert _file(document, "customers/index/")["behind"] is True
    with clean_db.begin() as conn:  # ... but it never came
        conn.execute(text("UPDATE change_log SET changed_at = now() - interval '1 hour'"))
    _beat(clean_db)  # the worker is alive: only the files are at fault

    code, document = _status(healthy)

    assert code == 1
    assert _checks(document) == ["cache_file_stale"] * 3
    stale = {p["message"].split(" ")[0] for p in document["problems"]}
    assert stale == {"customers/", "customers/index/", "analytics/summary.json"}
    assert _file(document, "customers/")["sample_behind"] == [1]
    assert _file(document, "marketing/insights.json")["stale"] is False  # reads no customers


def test_a_stopped_worker_with_pending_changes_is_a_problem(healthy, clean_db):
    _beat(clean_db, age_seconds=3600)
    code, document = _status(healthy)
    assert code == 0, document["problems"]  # nothing pending: its absence costs nothing yet

    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (name, email) VALUES ('C', 'c@x.io')"))
    code, document = _status(healthy)

    assert code == 1
    assert _checks(document) == ["cache_worker_down"]
    assert not document["cache_worker"]["alive"]
    assert document["cache_worker"]["lag_changes"] >= 1


def test_a_worker_that_never_ran_is_a_problem_once_changes_wait(healthy, clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM cache_worker_state"))
        conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id = 2"))
    code, document = _status(healthy)
    assert code == 1
    assert _checks(document) == ["cache_worker_down"]
    assert "never ran" in document["problems"][0]["message"]


def test_rejected_webhook_events_of_the_last_day_are_a_problem(healthy, clean_db):
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload, processed_at, rejected_at,"
                " error) VALUES ('leadgen', 'old', '{}', now() - interval '3 days',"
                " now() - interval '3 days', 'bad'), ('leadgen', 'p', '{}', NULL, NULL, NULL)"
            )
        )
    code, document = _status(healthy)
    assert code == 0, document["problems"]  # an old rejection is shown, not failed on
    assert (document["webhooks"]["rejected"], document["webhooks"]["pending"]) == (1, 1)
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload, processed_at, rejected_at,"
                " error) VALUES ('leadgen', 'new', '{}', now(), now(), 'bad')"
            )
        )
    code, document = _status(healthy)
    assert code == 1 and _checks(document) == ["webhook_events_rejected"]


def test_failing_asset_checks_of_the_instance_are_a_problem(healthy, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        for name, passed, severity in (
            ("not_behind_change_log", False, dg.AssetCheckSeverity.ERROR),
            ("row_count", False, dg.AssetCheckSeverity.WARN),
            ("summary_matches_schema", True, dg.AssetCheckSeverity.ERROR),
        ):
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey("analytics_summary"),
                    check_name=name,
                    passed=passed,
                    severity=severity,
                )
            )
    finally:
        instance.dispose()

    code, document = _status({**healthy, "DAGSTER_HOME": str(home)})

    assert code == 1 and _checks(document) == ["asset_checks_failing"]
    failing = {(c["check"], c["severity"]) for c in document["dagster"]["failing_checks"]}
    assert failing == {("not_behind_change_log", "ERROR"), ("row_count", "WARN")}
    assert "row_count" not in document["problems"][0]["message"]  # a warning is not a failure
    assert document["dagster"]["checks_seen"] == 3


def test_an_unreachable_database_is_a_problem_and_the_files_still_show(dirs):
    env = {
        "CRM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "CRM_CACHE_DIR": str(dirs["cache"]),
        "CRM_DATA_DIR": str(dirs["data"]),
    }
    document = collect(load_settings(env))
    assert _checks(document) == ["database_unreachable"]
    assert document["database"]["reachable"] is False
    assert document["cache_worker"] is None and document["sync"] is None
    assert all(f["behind"] is None for f in document["cache"]["files"])


def test_the_sync_checkpoint_it_reports_is_the_one_the_sync_keeps():
    from crm_pipeline import orchestrate
    from crm_pipeline.status.activity import INTERRUPTED_SYNC_STREAM

    assert INTERRUPTED_SYNC_STREAM == orchestrate.CHECKPOINT_STREAM


def test_the_command_prints_a_screen_or_json_and_exits_as_a_probe(healthy, clean_db, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}

    def run(*args):
        return subprocess.run(
            [CLI, "status", *args],
            env={**base, **healthy},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    screen = run()
    assert screen.returncode == 0, screen.stdout + screen.stderr
    assert screen.stdout.startswith("crm-pipeline status at ") and ": ok" in screen.stdout
    assert "customers/index/" in screen.stdout and "\x1b" not in screen.stdout
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM cache_worker_state"))
        conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id = 2"))
    probe = run("--json")
    assert probe.returncode == 1
    assert _checks(json.loads(probe.stdout)) == ["cache_worker_down"]


def test_a_database_behind_the_code_is_a_problem(healthy, clean_db):
    with clean_db.begin() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        code, document = _status(healthy)
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert code == 1 and _checks(document) == ["database_not_at_head"]
    assert document["database"]["revision"] == "0001"
    assert "crm-pipeline db upgrade" in document["problems"][0]["message"]
