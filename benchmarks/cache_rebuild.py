"""B3 cache rebuild: the customer 360 files, full at N customers and targeted at N vs 1k.

    .venv/bin/python benchmarks/cache_rebuild.py [--quick] [--customers N] [--results FILE]

Runs on a private embedded PostgreSQL in a temp dir, with two databases seeded by
generate_series with a realistic fan-out per customer (about 1.5 leads with field_data,
5 orders, 1.2 conversations holding about 8 messages each, attribution through ads and
campaigns). Our path is the real `customer_profiles_cache` asset run by `dagster.materialize`
(ephemeral instance, in process). References, measured in the same run:

  full      ours: the asset without ids, writing N files (one snapshot, batched queries,
            one atomic write per file, deleted customers' files swept).
            reference: `orjson.dumps` + atomic write (temp file, fsync, rename, directory
            fsync: what `crm_pipeline/cachefile.py` does) of the very same N documents,
            built in memory beforehand. Target: ours <= 3x the reference's time.
  targeted  the asset with `customer_ids` = 10 ids spread over the table, at N customers vs
            at 1k customers (each database's cache folder fully built first), best of a few
            runs each. Target: targeted(N) <= 2x targeted(1k): the cost follows the ids,
            not the table size.

Default N is 100k; --quick uses 5k (about a minute).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import orjson
from customer_data import materialize_profiles, seed_customers

TARGETED_IDS = 10
SMALL_CUSTOMERS = 1_000


def spread_ids(customers: int, count: int = TARGETED_IDS) -> list[int]:
    """`count` customer ids spread evenly over 1..customers."""
    return sorted({1 + (customers - 1) * k // max(1, count - 1) for k in range(count)})


def build_documents(url: str) -> list[tuple[int, dict]]:
    """Every customer's document exactly as the asset builds it (untimed preparation)."""
    from crm_pipeline.cache import customer_files
    from crm_pipeline.cache.registry import CUSTOMER_SCHEMA_VERSION
    from crm_pipeline.cachefile import envelope
    from crm_pipeline.db.changelog import reflected_watermark
    from crm_pipeline.db.engine import get_engine, read_snapshot

    documents = []
    with read_snapshot(get_engine(url)) as conn:
        watermark = reflected_watermark(conn)
        for ids in customer_files.all_customer_ids(conn):
            profiles = customer_files.build_profiles(conn, ids)
            documents.extend(
                (cid, envelope(p, watermark=watermark, schema_version=CUSTOMER_SCHEMA_VERSION))
                for cid, p in profiles.items()
            )
    return documents


def rebuild_directly(url: str, cache_dir: Path, ids: list[int]) -> None:
    """What the asset does for `ids`, called directly (no Dagster run around it)."""
    from crm_pipeline.cache import customer_files
    from crm_pipeline.cache.registry import CUSTOMER_SCHEMA_VERSION
    from crm_pipeline.cachefile import envelope, write_json_atomic
    from crm_pipeline.db.changelog import reflected_watermark
    from crm_pipeline.db.engine import get_engine, read_snapshot

    with read_snapshot(get_engine(url)) as conn:
        watermark = reflected_watermark(conn)
        for cid, profile in customer_files.build_profiles(conn, ids).items():
            version = CUSTOMER_SCHEMA_VERSION
            document = envelope(profile, watermark=watermark, schema_version=version)
            write_json_atomic(cache_dir / f"{cid}.json", document)


def reference_write(folder: Path, documents: list[tuple[int, dict]]) -> None:
    """orjson dump + atomic write of each document: the syscalls cachefile.py makes."""
    from crm_pipeline.cachefile import _OPTIONS, _default

    folder.mkdir(parents=True, exist_ok=True)
    for cid, document in documents:
        path = folder / f"{cid}.json"
        data = orjson.dumps(document, default=_default, option=_OPTIONS)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _without_time(path: Path) -> dict:
    document = orjson.loads(path.read_bytes())
    document.pop("generated_at")
    return document


def check_same_files(ours: Path, reference: Path, expected: int) -> None:
    """Both folders hold `expected` files, and sampled files agree (but for generated_at)."""
    names = sorted(p.name for p in ours.glob("*.json"))
    if len(names) != expected or len(list(reference.glob("*.json"))) != expected:
        raise SystemExit(f"expected {expected} files in {ours} and {reference}")
    for name in names[:: max(1, len(names) // 50)]:
        if _without_time(ours / name) != _without_time(reference / name):
            raise SystemExit(f"{name}: ours and the reference's documents differ")


def point_product_at(work: Path, url: str) -> None:
    """Set CRM_* for the asset run in this process: the product must not pick up the user's
    settings by accident."""
    os.environ.update(
        CRM_DATABASE_URL=url, CRM_CACHE_DIR=str(work / "cache"), CRM_DATA_DIR=str(work / "data")
    )


def measure_full(work: Path, url: str, customers: int) -> tuple[float, float, int]:
    """Full rebuild, ours then the reference writing the same documents, both folders checked
    alike: (our seconds, the reference's seconds, bytes of our files)."""
    ours_dir, ref_dir = work / "cache-big", work / "ref"
    ours = harness.timed(lambda: materialize_profiles(url, ours_dir))
    folder = ours_dir / "customers"
    documents = build_documents(url)
    size = sum((folder / f"{cid}.json").stat().st_size for cid, _ in documents)
    reference = harness.timed(lambda: reference_write(ref_dir, documents))
    documents.clear()  # free them before the rest of the run
    gc.collect()
    check_same_files(folder, ref_dir, customers)
    return ours, reference, size


def measure_targeted(
    work: Path, url_big: str, url_small: str, customers: int, repeats: int
) -> dict[str, float]:
    """10 ids at N vs at 1k, each folder fully built first, through Dagster and without it:
    best-of seconds keyed big, small, work_big, work_small."""
    materialize_profiles(url_small, work / "cache-small")
    ids_big, ids_small = spread_ids(customers), spread_ids(SMALL_CUSTOMERS)
    first_file = work / "cache-big" / "customers" / f"{ids_big[0]}.json"
    before = first_file.stat().st_mtime_ns
    seconds = {
        "big": harness.best_of(
            repeats, lambda: materialize_profiles(url_big, work / "cache-big", ids_big)
        )
    }
    if first_file.stat().st_mtime_ns == before:
        raise SystemExit("the targeted run did not rewrite its files")
    seconds["small"] = harness.best_of(
        repeats, lambda: materialize_profiles(url_small, work / "cache-small", ids_small)
    )
    # The same 10 files without Dagster: the work itself (snapshot, queries, writes).
    seconds["work_big"] = harness.best_of(
        repeats, lambda: rebuild_directly(url_big, work / "w", ids_big)
    )
    seconds["work_small"] = harness.best_of(
        repeats, lambda: rebuild_directly(url_small, work / "w", ids_small)
    )
    return seconds


def report_rebuild(args, big: int, repeats: int, rows: dict[str, int], full, targeted) -> None:
    """Print (and record) B3's two rows: the full rebuild and the targeted one."""
    ours_full, ref_full, size = full
    measurements = [
        harness.measure(
            f"B3 full rebuild, {big // 1000}k customer files", ours_full, ref_full, "s", "<= 3"
        ),
        harness.measure(
            f"B3 targeted rebuild of 10, N={big // 1000}k vs 1k",
            targeted["big"],
            targeted["small"],
            "s",
            "<= 2",
        ),
    ]
    harness.report(
        "B3 customer 360 cache rebuild (customer_profiles_cache via dagster.materialize)",
        measurements,
        args,
        details=[
            f"N={big:,}: {rows['leads']:,} leads, {rows['orders']:,} orders, "
            f"{rows['conversations']:,} conversations, {rows['messages']:,} messages; "
            f"{size / big / 1024:.1f} KiB per file, {size / 2**20:.0f} MiB in all",
            f"full: ours {big / ours_full:,.0f} files/s; reference (orjson + atomic write of "
            f"the same documents built beforehand) {big / ref_full:,.0f} files/s",
            f"targeted: best of {repeats} runs of 10 ids each, including Dagster's in-process "
            f"run overhead; the work alone (snapshot, queries, 10 atomic writes) takes "
            f"{targeted['work_big'] * 1000:.1f} ms at N={big // 1000}k vs "
            f"{targeted['work_small'] * 1000:.1f} ms at 1k",
        ],
    )


def main() -> int:
    """Seed N and 1k customers, time the full and targeted rebuilds, report B3."""
    args = harness.parse_args(
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--customers", type=int, help="N (default 100k, quick 5k)"),
    )
    big = args.customers or (5_000 if args.quick else 100_000)
    repeats = 3 if args.quick else 5

    with harness.private_postgres("cache-rebuild") as (work, new_database):
        url_big = new_database("big")
        point_product_at(work, url_big)
        url_small = new_database("small")
        rows_big = seed_customers(url_big, big)
        seed_customers(url_small, SMALL_CUSTOMERS)
        print(f"seeded N={big:,}: {rows_big}", flush=True)
        materialize_profiles(url_small, work / "cache-small", [1])  # warm up imports, pool
        full = measure_full(work, url_big, big)
        targeted = measure_targeted(work, url_big, url_small, big, repeats)
        for name in ("cache-big", "ref", "cache-small", "data", "w"):  # ~1 GB at 100k
            shutil.rmtree(work / name, ignore_errors=True)

    report_rebuild(args, big, repeats, rows_big, full, targeted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
