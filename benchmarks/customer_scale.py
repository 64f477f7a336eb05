"""B9 cost curves of the customer list: the segmented index and `GET /api/customers` at 10k, 100k
and 1M customers (--quick: 1k and 10k).

    .venv/bin/python benchmarks/customer_scale.py [--quick] [--sizes 10000,100000,1000000]

Per size, on a private embedded PostgreSQL (a database per size), seeded with generate_series:
customers with names from 40 first and 40 last names (so `q=ana` matches Ana, Anabela,
Anastasia and Anand: about one customer in ten), 3 orders and 1.5 leads per customer.

  build   the whole index once, as a full `customer_index_cache` run writes it.
  summary summary.json rebuilt from the KPI rollups (filled from the seeded rows, as the
          triggers would have kept them), best of 5; B10 measures it at 10M orders.
  write   one psql-style UPDATE of one customer in a full segment, then the cache worker's batch
          for that change window (`read_and_rebuild_customers`, what `crm-pipeline cache-worker`
          runs) through a store that counts what it writes: the files and bytes (segments,
          manifest, the customer's 360 file). Five writes; the median is reported.
  serve   the real API (`create_app()` under uvicorn, its own process, as B5 starts it) on that
          cache: the time until its in-memory index answers the first page and the process's
          RSS, then list pages (limit 50, a random sort, 1 in 10 a first page, the rest from a
          cursor taken from a random customer of the index; 1 in 5 with tier=gold; 10,000) over 8
          keep-alive connections, and `q=ana&limit=50` alone and over 8 connections; then
          `q=zeca&limit=50` alone (every Zeca sorts last by name: the walk gives up and the
          candidates are collected, the plan's worst case), for the details. Every answer is
          checked: 200 and `X-Cache: HIT`, and the search pages' customers match.

Targets: bytes written per customer write at the largest size <= 1.2x at the smallest;
list-page p99 (8 clients) at the largest <= 2x at the smallest; and `q=ana&limit=50` p99 at
the largest under 50 ms (its reference is 50 ms), for one client and for 8 at once.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness  # first: puts the repo root on sys.path
import orjson
import psutil
import psycopg
from api_servers import Server
from http_load import Run, load

FIRST = (  # noqa: SIM905  (names read better as names)
    "Ana Anabela Anastasia Mariana Juliana Bruno Carla Diego Elena Fabio Gina Hugo Iris Joao "
    "Karin Luis Marta Nuno Olga Pedro Quim Rita Sara Tiago Ursula Vera Wanda Xavier Yara Zeca "
    "Alice Bernardo Clara Duarte Eva Filipe Helena Ivo Jorge Laura"
).split()
LAST = (  # noqa: SIM905
    "Anand Silva Santos Costa Pereira Oliveira Rodrigues Martins Jesus Sousa Fernandes "
    "Goncalves Gomes Lopes Marques Alves Almeida Ribeiro Pinto Carvalho Teixeira Moreira "
    "Correia Mendes Nunes Soares Vieira Monteiro Cardoso Rocha Neves Coelho Cruz Cunha Pires "
    "Ramos Reis Simoes Antunes Matos"
).split()
SEED_SQL = """
INSERT INTO customers (id, name, email, phone, tier, created_at, updated_at)
SELECT g, f.name || ' ' || l.name,
       lower(f.name) || '.' || lower(l.name) || g || '@example.com',
       '+1555' || lpad(g::text, 7, '0'),
       (ARRAY['standard', 'standard', 'silver', 'gold'])[1 + g % 4],
       now() - make_interval(days => g % 700),
       now() - make_interval(mins => ((g::bigint * 7919) % 500000)::int)
FROM generate_series(1, {n}) g
JOIN LATERAL (SELECT (ARRAY[{first}])[1 + g % {nf}] AS name) f ON true
JOIN LATERAL (SELECT (ARRAY[{last}])[1 + (g / {nf}) % {nl}] AS name) l ON true;
SELECT setval(pg_get_serial_sequence('customers', 'id'), {n});
INSERT INTO orders (id, external_id, customer_id, amount, currency, status, created_at)
SELECT g, 'ord' || g, 1 + (g * 7) % {n}, round((random() * 500)::numeric, 2), 'USD',
       (ARRAY['paid', 'paid', 'shipped', 'refunded', 'pending'])[1 + g % 5],
       now() - make_interval(mins => g % 100000)
FROM generate_series(1, {n} * 3) g;
SELECT setval(pg_get_serial_sequence('orders', 'id'), {n} * 3);
INSERT INTO leads (id, form_id, created_time, email, full_name, customer_id)
SELECT 'lead' || g, 'form1', now() - make_interval(mins => g), 'lead' || g || '@example.com',
       'Lead ' || g, CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + (g * 13) % {n} END
FROM generate_series(1, {n} * 3 / 2) g;
"""
WRITES = 5
LIST_REQUESTS, SEARCH_REQUESTS, CLIENTS = 10_000, 1000, 8
SEARCH = "q=ana&limit=50"
FOLLOW = "q=zeca&limit=50"


def seed(url: str, n: int) -> dict[str, int]:
    """Seed `n` customers with their orders and leads (triggers off: no change-log history)."""
    names = {
        "first": ", ".join(f"'{x}'" for x in FIRST),
        "last": ", ".join(f"'{x}'" for x in LAST),
        "nf": len(FIRST),
        "nl": len(LAST),
    }
    from crm_pipeline.db.engine import get_engine
    from crm_pipeline.db.rollups import rebuild_rollups

    with psycopg.connect(harness.libpq(url)) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(SEED_SQL.format(n=int(n), **names))
        conn.commit()
    with get_engine(url).begin() as conn:  # the KPI rollups the triggers would have kept
        rebuild_rollups(conn)
    with psycopg.connect(harness.libpq(url), autocommit=True) as conn:
        conn.execute("ANALYZE")
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orders", "leads")
        }


def counting_store(root: Path):
    """A local cache folder that counts the files and bytes written through it."""
    from crm_pipeline.cache.stores import LocalFolder, ObjectRef

    class Counting(LocalFolder):
        written: dict[str, int]

        def file(self, relative: str) -> ObjectRef:
            return ObjectRef(self, relative)  # every write goes through the methods below

        def publish_document(self, relative: str, document: dict[str, Any]):
            outcome = super().publish_document(relative, document)
            self.written[relative] = outcome.size
            return outcome

        def update_document(self, relative: str, merge):
            outcome = super().update_document(relative, merge)
            self.written[relative] = outcome.size
            return outcome

    store = Counting(root)
    store.written = {}
    return store


def build_index(url: str, cache: Path) -> dict[str, float]:
    """The whole index, as a full `customer_index_cache` run: seconds, bytes, segments."""
    from crm_pipeline.cache.rebuild import rebuild_index
    from crm_pipeline.db.engine import get_engine, read_snapshot

    started = time.perf_counter()
    with read_snapshot(get_engine(url)) as conn:
        result = rebuild_index(conn, cache, None)
    return {
        "seconds": time.perf_counter() - started,
        "bytes": result.bytes,
        "segments": len(result.written),
    }


def summary_rebuild(url: str, cache: Path) -> float:
    """Seconds of one summary.json rebuild from the KPI rollups (best of 5), as the
    `analytics_summary` asset and the cache worker write it."""
    from crm_pipeline.cache import registry
    from crm_pipeline.cache.rebuild import rebuild_file
    from crm_pipeline.db.engine import get_engine

    engine = get_engine(url)
    return harness.best_of(5, lambda: rebuild_file(engine, cache, registry.ANALYTICS_SUMMARY))


def one_writes(url: str, cache: Path, n: int) -> list[dict[str, float]]:
    """WRITES single-customer updates, each followed by the worker's batch of its window."""
    from sqlalchemy import text

    from crm_pipeline.cache.customer_index import INDEX_DIR, MANIFEST_FILE
    from crm_pipeline.cache.worker.batch import read_and_rebuild_customers
    from crm_pipeline.db.changelog import read_change_window
    from crm_pipeline.db.engine import get_engine

    engine = get_engine(url)
    with engine.connect() as conn:
        since = read_change_window(conn, None).upto
    rng = random.Random(9)
    measured = []
    for k in range(WRITES):
        cid = rng.randrange(n // 4, n // 2)  # a full segment at every size
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE customers SET name = :v WHERE id = :i"),
                {"v": f"Renamed {k}", "i": cid},
            )
        store = counting_store(cache)
        started = time.perf_counter()
        batch = read_and_rebuild_customers(engine, store, since, 2000)
        seconds = time.perf_counter() - started
        since = batch.window.upto
        segments = {p: b for p, b in store.written.items() if p.startswith(INDEX_DIR + "/")}
        measured.append(
            {
                "files": len(store.written),
                "segments": len(segments),
                "index_bytes": sum(segments.values()),
                "manifest_bytes": store.written.get(MANIFEST_FILE, 0),
                "bytes": sum(store.written.values()),
                "seconds": seconds,
            }
        )
    return measured


def cursors(cache: Path, rng: random.Random, count: int) -> list[str]:
    """List-page queries: a random sort, a cursor from a random customer of the index (one in
    ten a first page), one in five for tier=gold."""
    from crm_pipeline.api.customer_query import encode_cursor
    from crm_pipeline.api.customer_search import Customer
    from crm_pipeline.cache.customer_index import MANIFEST_FILE, manifest_entries, segment_file

    manifest = orjson.loads((cache / MANIFEST_FILE).read_bytes())
    segments = [s for s, e in manifest_entries(manifest).items() if e.count]
    picked: list[Customer] = []
    for segment in rng.sample(segments, min(20, len(segments))):
        rows = orjson.loads((cache / segment_file(segment)).read_bytes())["customers"]
        picked += [Customer.from_row(r) for r in rng.sample(rows, min(50, len(rows)))]
    queries = []
    for _ in range(count):
        sort = rng.choice(("name", "revenue", "updated"))
        query = f"limit=50&sort={sort}"
        if rng.random() >= 0.1:
            query += f"&cursor={encode_cursor(sort, rng.choice(picked))}"
        if rng.random() < 0.2:
            query += "&tier=gold"
        queries.append(query)
    return queries


def check(run: Run, label: str) -> None:
    """Every answer a 200 from memory (HIT); every sampled search page matches `ana`."""
    if set(run.statuses) != {200} or set(run.cache) != {"HIT"}:
        raise SystemExit(f"{label}: statuses {run.statuses}, X-Cache {run.cache}")
    for query, body in run.samples.items():
        page = orjson.loads(body)
        if query == SEARCH:
            for c in page["customers"]:
                words = c["name"].lower().split()
                if not (any(w.startswith("ana") for w in words) or c["email"].startswith("ana")):
                    raise SystemExit(f"{label}: customer {c['id']} does not match q=ana")
            if len(page["customers"]) != 50:
                raise SystemExit(f"{label}: a search page of {len(page['customers'])}")


def serve(stage: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Start the API on the cache, time its first page, then the list and search loads."""
    import http.client

    server = Server("ours", stage["env"])
    try:
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        connection.request(
            "GET", "/api/customers?limit=1", headers={"Authorization": f"Bearer {stage['key']}"}
        )
        first = connection.getresponse()
        first.read()
        connection.close()
        if first.status != 200:
            raise SystemExit(f"the first page answered {first.status}")
        loaded = time.perf_counter() - started
        rss = psutil.Process(server.proc.pid).memory_info().rss
        queries = cursors(stage["cache"], rng, LIST_REQUESTS)
        key, prefix = stage["key"], "/api/customers?"
        load(server.port, queries[:400], CLIENTS, key, prefix=prefix)  # warm-up
        listed = load(server.port, queries, CLIENTS, key, prefix=prefix)
        alone = load(server.port, [SEARCH] * SEARCH_REQUESTS, 1, key, prefix=prefix)
        crowd = load(server.port, [SEARCH] * SEARCH_REQUESTS * 2, CLIENTS, key, prefix=prefix)
        # A search that follows the name order (every Zeca sorts last): the worst plan case.
        follow = load(server.port, [FOLLOW] * 100, 1, key, prefix=prefix)
        for run, label in ((listed, "list"), (alone, "search"), (crowd, "search x8")):
            check(run, label)
        if set(follow.statuses) != {200}:
            raise SystemExit(f"q=zeca: statuses {follow.statuses}")
        return {
            "first_page_seconds": loaded,
            "rss": rss,
            "list": listed,
            "search": alone,
            "search8": crowd,
            "follow": follow,
        }
    finally:
        server.stop()


def measure_size(new_database, work: Path, n: int, rng: random.Random) -> dict[str, Any]:
    """Seed, build, write and serve at `n` customers."""
    from crm_pipeline.db.api_keys import create_key
    from crm_pipeline.db.engine import get_engine

    url = new_database(f"scale_{n}")
    cache = work / f"cache-{n}"
    started = time.perf_counter()
    rows = seed(url, n)
    seeded = time.perf_counter() - started
    build = build_index(url, cache)
    summary = summary_rebuild(url, cache)
    writes = one_writes(url, cache, n)
    with get_engine(url).begin() as conn:
        key = create_key(conn, "bench", "customers:read")
    env = harness.product_env(
        ("CRM_", "FB_", "DAGSTER"),
        CRM_DATABASE_URL=url,
        CRM_CACHE_DIR=str(cache),
        CRM_DATA_DIR=str(work / "data"),
        CRM_API_CACHE_TTL_SECONDS="3600",
    )
    served = serve({"env": env, "cache": cache, "key": key}, rng)
    return {
        "n": n,
        "rows": rows,
        "seed_seconds": seeded,
        "build": build,
        "summary_seconds": summary,
        "writes": writes,
        **served,
    }


def _ms(run: Run, q: int) -> float:
    return harness.percentile(run.latencies, q) * 1000


def _median(writes: list[dict[str, float]], key: str) -> float:
    return statistics.median(w[key] for w in writes)


def measurements(results: list[dict[str, Any]]) -> list[harness.Measurement]:
    """B9's rows: the largest size against the smallest, and the search p99s vs 50 ms."""
    small, large = results[0], results[-1]
    sizes = f"{large['n']:,} vs {small['n']:,} customers"
    return [
        harness.measure(
            f"B9 one customer write: bytes written, {sizes}",
            _median(large["writes"], "bytes"),
            _median(small["writes"], "bytes"),
            "bytes",
            "<= 1.2",
            note=f"{_median(large['writes'], 'segments'):.0f} segment(s) rewritten per write",
        ),
        harness.measure(
            f"B9 list page p99, {CLIENTS} clients, {sizes}",
            _ms(large["list"], 99),
            _ms(small["list"], 99),
            "ms",
            "<= 2",
            note=f"p50 {_ms(large['list'], 50):.2f} vs {_ms(small['list'], 50):.2f} ms",
        ),
        harness.measure(
            f"B9 GET /api/customers?{SEARCH} p99, one client, {large['n']:,} customers",
            _ms(large["search"], 99),
            50.0,
            "ms",
            "<= 1",
            note=f"p50 {_ms(large['search'], 50):.2f} ms",
        ),
        harness.measure(
            f"B9 GET /api/customers?{SEARCH} p99, {CLIENTS} clients, {large['n']:,} customers",
            _ms(large["search8"], 99),
            50.0,
            "ms",
            "<= 1",
            note=f"p50 {_ms(large['search8'], 50):.2f} ms (each waits for the others' turns)",
        ),
    ]


def details(results: list[dict[str, Any]]) -> list[str]:
    """One block of lines per size."""
    lines = []
    for r in results:
        w, b = r["writes"], r["build"]
        lines += [
            f"{r['n']:>9,} customers ({r['rows']['orders']:,} orders, {r['rows']['leads']:,} "
            f"leads; seeded in {r['seed_seconds']:.1f} s)",
            f"  full index build {b['seconds']:.2f} s: {b['segments']} segments, "
            f"{b['bytes'] / 1e6:.1f} MB; summary.json rebuild from the rollups "
            f"{r['summary_seconds'] * 1000:.1f} ms (best of 5)",
            f"  one customer write: {_median(w, 'files'):.0f} files ({_median(w, 'segments'):.0f} "
            f"segment + manifest + 360 file), {_median(w, 'bytes') / 1e3:.1f} kB "
            f"(segment {_median(w, 'index_bytes') / 1e3:.1f} kB, "
            f"manifest {_median(w, 'manifest_bytes') / 1e3:.1f} kB), worker batch "
            f"{_median(w, 'seconds') * 1000:.1f} ms (median of {len(w)})",
            f"  API: first page after {r['first_page_seconds']:.1f} s (index loaded), RSS "
            f"{r['rss'] / 2**20:,.0f} MiB",
            f"  list pages x{CLIENTS}: {r['list'].rate:,.0f} req/s, p50 {_ms(r['list'], 50):.2f} "
            f"ms, p99 {_ms(r['list'], 99):.2f} ms",
            f"  {SEARCH}: alone p50 {_ms(r['search'], 50):.2f} ms, p99 "
            f"{_ms(r['search'], 99):.2f} ms; x{CLIENTS} p50 {_ms(r['search8'], 50):.2f} ms, "
            f"p99 {_ms(r['search8'], 99):.2f} ms",
            f"  {FOLLOW} (matches all at the end of the name order): alone p50 "
            f"{_ms(r['follow'], 50):.2f} ms, p99 {_ms(r['follow'], 99):.2f} ms",
        ]
    lines.append("client, server and PostgreSQL share the machine's cores; one uvicorn process")
    lines.append("every answer checked: 200, X-Cache HIT; every sampled search page matches")
    return lines


def _add_arguments(parser) -> None:
    parser.add_argument("--sizes", help="comma-separated customer counts (default 10k,100k,1M)")


def main() -> int:
    """Each size in turn, then the report."""
    args = harness.parse_args(__doc__.splitlines()[0], _add_arguments)
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    else:
        sizes = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    rng = random.Random(42)
    results = []
    with harness.private_postgres("customer-scale") as (work, new_database):
        for n in sizes:
            started = time.perf_counter()
            results.append(measure_size(new_database, work, n, rng))
            print(f"{n:,} customers measured in {time.perf_counter() - started:.0f} s", flush=True)
    harness.report(
        "B9 the customer list at scale (segmented index, in-memory list and search)",
        measurements(results),
        args,
        details=details(results),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
