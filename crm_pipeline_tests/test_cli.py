"""The `crm-pipeline` command, run as a user runs it: a subprocess with environment variables."""

import ast
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline.db.engine import libpq_url
from crm_pipeline.db.migrate import head_revision
from crm_pipeline_tests.emulator_snapshots import all_leads, conversations_with_messages

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
        assert count("leads") == len(all_leads(data))
        assert count("conversations") == len(conversations_with_messages(data))
        assert count("messages") == sum(
            len(c["messages"]) for c in conversations_with_messages(data)
        )
    # Nothing we or Dagster stored (Parquet, run/event storage, compute logs, cache files)
    # holds the token.
    for path in [*(tmp_path / "data").rglob("*"), *(tmp_path / "cache").rglob("*")]:
        if path.is_file() and "pg" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes(), path
    assert (tmp_path / "cache" / "analytics" / "summary.json").exists()
    assert (tmp_path / "data" / "dagster").is_dir()  # runs recorded on a real local instance
    # The streams, both days of insights as one ranged run, the caches: three runs.
    instance = dg.DagsterInstance.from_config(str(tmp_path / "data" / "dagster"))
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


# -- the emulator, as a process ------------------------------------------------------------------


def _get_json(url: str):
    # No proxies: test traffic goes straight to 127.0.0.1, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return json.load(response)


def test_emulator_command_serves_in_the_foreground(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    proc = subprocess.Popen(
        [CLI, "emulator", "--seed", "8"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["pid"] == proc.pid  # the command became the emulator, nothing in between
        accounts = _get_json(f"{ready['url']}/v26.0/me/adaccounts?access_token=t")["data"]
        assert [a["id"] for a in accounts] == ["act_1001", "act_1002"]
    finally:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_emulator_command_runs_a_command_against_its_emulator(tmp_path):
    show = "import os, sys; print({k: v for k, v in os.environ.items() if k[:3] in ('FB_', 'CRM')})"
    result = _run(
        ["emulator", "--", sys.executable, "-c", f"{show}; sys.exit(3)"],
        {"FB_ACCESS_TOKEN": TOKEN, "FB_AD_ACCOUNT_IDS": "act_9"},
        tmp_path,
    )
    assert result.returncode == 3, result.stderr  # the command's own exit code
    env = ast.literal_eval(result.stdout)
    assert env["FB_GRAPH_URL"] == "emulator"
    assert env["FB_AD_ACCOUNT_IDS"] == "act_1001,act_1002" and env["FB_PAGE_ID"] == "2001"
    assert "FB_ACCESS_TOKEN" not in env  # a real token never goes to the emulator
    with pytest.raises(urllib.error.URLError):  # stopped with the command
        _get_json(f"{env['CRM_EMULATOR_URL']}/v26.0/me?access_token=t")


def test_sync_asking_for_the_emulator_starts_a_private_one(clean_db, cli_env, tmp_path):
    env = {**cli_env, "FB_GRAPH_URL": "emulator", "FB_AD_ACCOUNT_IDS": "act_1002"}
    result = _run(
        ["sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-01", "--no-cache"],
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = EmulatorData().insights("act_1002", dt.date(2026, 6, 1), dt.date(2026, 6, 1))
    with clean_db.connect() as conn:
        accounts = conn.execute(text("SELECT DISTINCT account_id FROM ad_insights_daily")).all()
        assert conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one() == len(
            expected
        )
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == len(
            all_leads(EmulatorData())
        )
    assert accounts == [("1002",)]  # as Meta reports it in insights rows: bare digits


def test_demo_syncs_from_an_emulator_process_of_its_own(fresh_database_url, tmp_path):
    env = {
        "CRM_DATABASE_URL": fresh_database_url,
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
        # Ignored: the demo always runs its own emulator and syncs all it serves.
        "FB_AD_ACCOUNT_IDS": "act_1002",
        "CRM_EMULATOR_URL": "http://127.0.0.1:9",
        "FB_ACCESS_TOKEN": TOKEN,
    }
    result = _run(["demo", "--days", "1"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ad accounts act_1001, act_1002 and Page 2001" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    ads = len(EmulatorData().ads("act_1001")) + len(EmulatorData().ads("act_1002"))
    with psycopg.connect(libpq_url(fresh_database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM ads").fetchone()[0] == ads
        assert conn.execute("SELECT count(*) FROM ad_insights_daily").fetchone()[0] == ads
    assert (tmp_path / "cache" / "analytics" / "summary.json").exists()
