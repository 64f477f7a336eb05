"""A Dagster run whose steps really run on a Celery worker pool (dagster-celery), end to end.

A `dagster-celery worker start` subprocess on the machine's broker, and `dagster job execute`
of `attribution_resync_celery` (crm_pipeline/celery_definitions.py) with
deploy/celery/run_config.yaml: the commands of docs/deployment.md ("Celery"), on a queue of the
test's own. The run re-syncs account-days from the bundled emulator into PostgreSQL and rebuilds
the cache files; then

- every step ran in a process of that worker (the pids of the run's STEP_START events, and the
  worker name dagster-celery records for each step), not in the test or the run process;
- the tables and cache files are those an in-process run of the same job writes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from sqlalchemy import Engine, text

from crm_pipeline.cachefile import read_json
from crm_pipeline.celery_definitions import attribution_resync_celery, defs
from crm_pipeline.db.demo_mark import claim_for_demo
from crm_pipeline.db.schema import metadata
from crm_pipeline.defs.facebook.partitions import accounts_partition_range, partition_range_tags
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline.orchestrate import local_instance_config
from crm_pipeline_tests.celery_worker import (
    ROOT,
    RUN_CONFIG,
    CeleryWorker,
    celery_worker,
    command_env,
    launch_command,
    reachable_broker,
    wait_until_ready,
    worker_command,
)

ACCOUNTS = ("act_1001", "act_1002")
PAGE_ID = "2001"
# What the job writes to the database (the seeded CRM rows only feed the cache files): emptied
# between the two runs, so the Celery run's rows are its own.
WRITTEN_TABLES = ("ad_insights_daily", "ad_account_insights_daily")
VOLATILE_COLUMNS = {"synced_at"}  # when we synced, not what Meta said
ENVELOPE_VOLATILE = {"generated_at", "watermark"}  # when and at which DB state a file was built
# The summary's freshness section reports when rows were synced and the last change_log write.
SUMMARY_SYNC_TIMES = {"ad_insights_synced_at", "change_log_changed_at"}
JOB = attribution_resync_celery.name
RUN_TIMEOUT_SECONDS = 180


def _range_tags() -> dict[str, str]:
    """Three days of the attribution window (before yesterday) of both accounts."""
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=4), today - dt.timedelta(days=2)
    return partition_range_tags(
        accounts_partition_range(ACCOUNTS, first.isoformat(), last.isoformat())
    )


def _crm_env(database_url: str, emulator_url: str, root: Path) -> dict[str, str]:
    """The CRM_* / FB_* environment of a run: the test database, the emulator, `root`'s dirs."""
    return {
        "CRM_DATABASE_URL": database_url,
        "CRM_DATA_DIR": str(root / "data"),
        "CRM_CACHE_DIR": str(root / "cache"),
        "FB_GRAPH_URL": "emulator",  # the emulator, asked for (invariant 9)
        "CRM_EMULATOR_URL": emulator_url,
        "FB_AD_ACCOUNT_IDS": ",".join(ACCOUNTS),
        "FB_PAGE_ID": PAGE_ID,
    }


def _table_rows(engine: Engine) -> dict[str, list]:
    """Every table's rows (but the change log's, whose ids and times are the writes' own),
    without sync times, in key order."""
    state = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name == "change_log":
                continue
            cols = [c for c in table.c if c.name not in VOLATILE_COLUMNS]
            query = table.select().with_only_columns(*cols).order_by(*table.primary_key.columns)
            state[table.name] = [tuple(row) for row in conn.execute(query)]
    return state


def _files(root: Path, pattern: str) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob(pattern)}


def _cache_payloads(cache_dir: Path) -> dict[str, dict]:
    """Every cache file's document, without the times and DB positions of its build."""
    payloads = {}
    for path in sorted(cache_dir.rglob("*.json")):
        doc = {k: v for k, v in read_json(path).items() if k not in ENVELOPE_VOLATILE}
        if "segments" in doc:  # the customer index manifest: the DB positions of each build
            doc.pop("full_watermark", None)
            doc["segments"] = [{**e, "watermark": None} for e in doc["segments"]]
        if "freshness" in doc:
            doc["freshness"] = {
                k: v for k, v in doc["freshness"].items() if k not in SUMMARY_SYNC_TIMES
            }
        payloads[str(path.relative_to(cache_dir))] = doc
    return payloads


@pytest.fixture
def broker() -> tuple[str, str]:
    """The machine's broker and result backend (on CI an unreachable one fails the test)."""
    return reachable_broker()


@pytest.fixture
def seeded_db(clean_db) -> Engine:
    """The session database, claimed for the emulator's data, with the demo CRM rows."""
    with clean_db.begin() as conn:
        claim_for_demo(conn)
    seed_demo_crm(clean_db)
    return clean_db


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A persistent Dagster instance (local SQLite storage) shared by test, run and worker."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_config())
    return home


def _run_in_process(monkeypatch, env: dict[str, str], tags: dict[str, str]) -> None:
    """The same job in the test process (in-process executor), configured alike."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    job = defs.resolve_job_def(JOB)
    result = job.execute_in_process(tags=tags, instance=dg.DagsterInstance.ephemeral())
    assert result.success


def _launch(env: dict[str, str], queue: str, tags: dict[str, str], tmp_path: Path):
    """docs/deployment.md's launch command, with one more run config file putting the run's
    steps on `queue`."""
    # Results kept a minute, not a day: each run's reply queue (rpc://) or result keys (Redis)
    # then leave the shared broker soon after the test.
    source = {"task_default_queue": queue, "result_expires": 60}
    overrides = tmp_path / "queue.yaml"
    overrides.write_text(yaml.safe_dump({"execution": {"config": {"config_source": source}}}))
    return subprocess.run(
        launch_command(JOB, tags, str(overrides)),
        cwd=ROOT,
        env=command_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


def _step_events(home: Path) -> tuple[dg.DagsterRun, list[dg.EventLogEntry]]:
    """The one run in the instance at `home`, and its events."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        return run, list(instance.all_logs(run.run_id))


def _assert_steps_ran_on(worker: CeleryWorker, worker_pids: set[int], home: Path) -> None:
    """The run succeeded, and each of its steps ran in one of `worker_pids`, taken by `worker`."""
    run, events = _step_events(home)
    assert run.status == dg.DagsterRunStatus.SUCCESS

    def by_type(kind: DagsterEventType) -> list[dg.DagsterEvent]:
        return [e.dagster_event for e in events if e.dagster_event_type == kind]

    [run_start] = by_type(DagsterEventType.RUN_START)
    starts = {e.step_key: e.pid for e in by_type(DagsterEventType.STEP_START)}
    expected = {node.name for node in defs.resolve_job_def(JOB).nodes}  # one step each
    assert set(starts) == expected, "every step of the job ran"
    # In the worker's processes: not the test's, not the run's (where in-process steps run).
    assert set(starts.values()) <= worker_pids, (starts, worker_pids)
    assert not {os.getpid(), run_start.pid} & set(starts.values())
    # dagster-celery names the worker that took each step: ours, on its own queue.
    took = {
        e.step_key: e.engine_event_data.metadata["Celery worker"].value
        for e in by_type(DagsterEventType.ENGINE_EVENT)
        if e.engine_event_data and "Celery worker" in e.engine_event_data.metadata
    }
    assert took == dict.fromkeys(expected, worker.nodename)


@pytest.mark.slow
@pytest.mark.db
def test_attribution_resync_runs_its_steps_on_a_celery_worker(
    broker, seeded_db, database_url, emulator, dagster_home, tmp_path, monkeypatch
):
    broker_url, backend_url = broker
    tags = _range_tags()
    celery_env = _crm_env(database_url, emulator.url, tmp_path / "celery")
    env = {
        **os.environ,
        **celery_env,
        "DAGSTER_HOME": str(dagster_home),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": backend_url,
    }
    with celery_worker(env, tmp_path / "worker.log") as worker:
        # The reference, in this process, while the worker starts.
        _run_in_process(monkeypatch, _crm_env(database_url, emulator.url, tmp_path / "local"), tags)
        expected_rows = _table_rows(seeded_db)
        assert all(expected_rows[name] for name in WRITTEN_TABLES), "the reference loaded rows"
        with seeded_db.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(WRITTEN_TABLES)}"))

        wait_until_ready(worker)
        result = _launch(env, worker.queue, tags, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr + worker.output()
        worker_pids = worker.pool_pids()
        _assert_steps_ran_on(worker, worker_pids, dagster_home)

    assert _table_rows(seeded_db) == expected_rows
    local = _cache_payloads(tmp_path / "local" / "cache")
    built = {"marketing/insights.json", "analytics/summary.json", "customers/index.json"}
    assert built <= set(local)
    assert _cache_payloads(tmp_path / "celery" / "cache") == local
    # The worker landed the raw files where the run's CRM_DATA_DIR says, as in process.
    raw = _files(tmp_path / "local" / "data", "*.parquet")
    assert raw and _files(tmp_path / "celery" / "data", "*.parquet") == raw


def _documented_commands() -> list[list[str]]:
    """The `dagster...` commands of docs/deployment.md's Celery section, as argument lists."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text[text.index("## Celery (dagster-celery)") :]
    section = section[: section.index("\n## ", 1)]
    commands, pending = [], ""
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            pending += line + "\n"
            if pending.count("'") % 2:  # a quoted argument goes on over the next line
                continue
            if pending.startswith("dagster"):
                commands.append(shlex.split(pending))
            pending = ""
    return commands


def test_the_docs_show_the_commands_this_test_runs():
    worker, launch = _documented_commands()
    queue = worker[worker.index("-q") + 1]
    assert worker == worker_command(queue, worker[worker.index("-n") + 1])
    run_config = yaml.safe_load((ROOT / RUN_CONFIG).read_text())
    assert run_config["execution"]["config"]["config_source"]["task_default_queue"] == queue
    tags = json.loads(launch[-1])  # the JSON is laid out over two lines there
    assert launch[:-1] == launch_command(JOB, tags)[:-1]
    assert set(tags) == set(_range_tags())
