"""The `crm-pipeline` command, run as a user runs it: a subprocess with environment variables."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline.db.migrate import head_revision

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
TOKEN = "EAAB-test-token-never-printed-42"


def _run(args, env, cwd):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    return subprocess.run(
        [CLI, *args], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def cli_env(database_url, tmp_path):
    return {
        "CRM_DATABASE_URL": database_url,
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_sync_facebook_against_a_graph_server_with_a_token_and_faults(clean_db, cli_env, tmp_path):
    day = dt.date(2026, 6, 1)
    data = EmulatorData()
    faults = FaultPlan()
    faults.add(
        Fault(kind="throttle", code=17, subcode=2446079, count=2, path="/insights"),
        Fault(kind="transient", count=2),
        Fault(kind="reduce_data", count=1, path="/insights"),
        Fault(kind="throttle", code=80005, count=1, path="/leads"),
    )
    with GraphEmulator(data, expected_token=TOKEN, faults=faults) as server:
        env = {
            **cli_env,
            "FB_GRAPH_URL": server.url,
            "FB_ACCESS_TOKEN": TOKEN,
            "FB_AD_ACCOUNT_IDS": "act_1001",
            "FB_PAGE_ID": data.page_id,
            "CRM_GRAPH_BACKOFF_BASE_SECONDS": "0.01",
        }
        result = _run(
            ["sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-02"], env, tmp_path
        )
        assert not faults.remaining
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    expected = len(data.insights("act_1001", day, day + dt.timedelta(days=1)))
    with clean_db.connect() as conn:
        count = lambda t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: E731
        assert count("ad_insights_daily") == expected
        assert count("leads") == len(data.all_leads_for_tests())
        assert count("conversations") == len(data.conversations_for_tests())
        assert count("messages") == sum(len(c["messages"]) for c in data.conversations_for_tests())
    # Nothing we or Dagster stored (Parquet, run/event storage, compute logs, cache files)
    # holds the token.
    for path in [*(tmp_path / "data").rglob("*"), *(tmp_path / "cache").rglob("*")]:
        if path.is_file() and "pg" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes(), path
    assert (tmp_path / "cache" / "analytics" / "summary.json").exists()
    assert (tmp_path / "data" / "dagster").is_dir()  # runs recorded on a real local instance
    # The streams, both days of insights as one ranged run, the caches: three runs.
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "data" / "dagster")))
    try:
        ranges = [
            (r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/partition"))
            for r in instance.get_runs()
        ]
    finally:
        instance.dispose()
    assert sorted(ranges, key=str) == [
        ("act_1001|2026-06-01", None),
        (None, None),
        (None, None),
    ]


def test_invalid_token_fails_the_run_without_printing_it(clean_db, cli_env, tmp_path):
    with GraphEmulator(EmulatorData(), expected_token="the-right-one") as server:
        env = {
            **cli_env,
            "FB_GRAPH_URL": server.url,
            "FB_ACCESS_TOKEN": TOKEN,
            "FB_AD_ACCOUNT_IDS": "act_1001",
        }
        result = _run(
            ["sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-01"], env, tmp_path
        )
    assert result.returncode != 0
    assert "190" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one() == 0


def test_bad_configuration_is_one_clear_line(tmp_path):
    result = _run(["db", "upgrade"], {"CRM_DATABASE_URL": f"mysql://u:{TOKEN}@h/db"}, tmp_path)
    assert result.returncode == 2
    assert "CRM_DATABASE_URL must point at PostgreSQL" in result.stderr
    assert TOKEN not in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_reports_the_revision(database_url, tmp_path):
    result = _run(["db", "upgrade"], {"CRM_DATABASE_URL": database_url}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stdout


def test_prune_changes_keeps_recent_rows(clean_db, database_url, tmp_path):
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (email) VALUES ('a@x.io'), ('b@x.io')"))
        conn.execute(
            text(
                "UPDATE change_log SET changed_at = now() - interval '30 days'"
                " WHERE id = (SELECT min(id) FROM change_log)"
            )
        )
    result = _run(
        ["db", "prune-changes", "--older-than-days", "7"],
        {"CRM_DATABASE_URL": database_url},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "removed 1 change_log rows" in result.stdout
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() == 1
