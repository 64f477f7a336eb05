"""B5 reads: `GET /api/customers/{id}` served from the cache vs built from PostgreSQL per request.

    .venv/bin/python benchmarks/api_reads.py [--quick] [--requests 20000] [--clients 8]
                                             [--noisy-rate 20]

Runs on a private embedded PostgreSQL in a temp dir, seeded like B3 (benchmarks/cache_rebuild.py:
customers with leads, orders, conversations and messages; 100k customers, 5k with --quick).
The files of a working set of customers are built by the real `customer_profiles_cache` asset.

  ours       the real API (`create_app()`, what `crm-pipeline serve` runs) under uvicorn in its
             own process on 127.0.0.1: the cache-first route, a HIT on every request (checked:
             200 and `X-Cache: HIT` on all of them).
  reference  the same app, same process setup, same path, with one change: that route's handler
             is replaced by one that builds the document from PostgreSQL per request, exactly
             as the route does on a miss (one REPEATABLE READ snapshot through the app's own
             `Database`, `build_profiles([id])`, the change-log watermark, `envelope` +
             `dumps`), without writing a file. Same middleware, routing, pool, serialiser, so
             the difference is "read the file" vs "query the database".

The load generator is a few keep-alive HTTP/1.1 connections driven by asyncio on uvloop in
this process (much cheaper per request than httpx, so it takes little of the 2 cores the
server and PostgreSQL also use; its CPU time is reported). Both runs send the same bounded,
seeded-random sequence of ids; sampled bodies are compared with the cache files.
Target: ours >= 5x the reference's throughput (req/s); p50/p99 latencies are in the details.

A second row, on ours: the same hit load once alone ("idle") and once while 50 more clients
ask for random ids, each at most --noisy-rate requests/s (ids drawn from 10x the customer
count, so about 9 in 10 do not exist and the rest are mostly outside the working set: misses
that build, 404s, remembered 404s). Target: the hits' p50 under that load <= 3x the idle p50.

Every request sends `Authorization: Bearer <key>` with a key made by `create_key` (scopes
customers:read, analytics:read) before the servers start. The servers are in
benchmarks/api_servers.py, the load generator in benchmarks/http_load.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import orjson
from api_servers import BARE_ROUTE, Server
from customer_data import materialize_profiles, seed_customers
from http_load import ROUTE, Noise, Run, load, notification_delays

WORKING_SET = 2_000  # customers whose files are requested (built by the asset beforehand)
NOISY_CLIENTS = 50
NOISY_ID_SPACE = 10  # random ids from 1 .. 10x the customers


def create_api_key(url: str) -> str:
    """A key for every request (`Authorization: Bearer`), made before the servers start."""
    from sqlalchemy import create_engine

    from crm_pipeline.db.api_keys import create_key

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return create_key(conn, "bench", "customers:read,analytics:read")
    finally:
        engine.dispose()


def _comparable(body: bytes) -> dict:
    document = orjson.loads(body)
    document.pop("generated_at")
    document.pop("watermark")
    return document


def check(run: Run, label: str, folder: Path, hits: bool) -> None:
    """Every response is a 200 (and a cache HIT for ours); sampled bodies match the files."""
    if set(run.statuses) != {200}:
        raise SystemExit(f"{label}: unexpected statuses {run.statuses}")
    if hits and set(run.cache) != {"HIT"}:
        raise SystemExit(f"{label}: not all cache hits: {run.cache}")
    for cid, body in run.samples.items():
        stored = (folder / f"{cid}.json").read_bytes()
        if hits and body != stored:
            raise SystemExit(f"{label}: customer {cid}: the body is not the cache file")
        if _comparable(body) != _comparable(stored):
            raise SystemExit(f"{label}: customer {cid}: the document differs from the cache file")


def _line(label: str, run: Run) -> str:
    n = len(run.latencies)
    p50, p99 = (harness.percentile(run.latencies, q) * 1000 for q in (50, 99))
    return (
        f"{label:<10} {run.rate:>7,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
        f"server CPU {run.server_cpu_seconds / n * 1e6:5.0f} us/req  "
        f"client CPU {run.cpu_seconds / n * 1e6:3.0f} us/req"
    )


def _latency_line(label: str, run: Run) -> str:
    p50, p99 = (harness.percentile(run.latencies, q) * 1000 for q in (50, 99))
    return f"{label:<10} {run.rate:>7,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (hits)"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, help="requests per run (default 20k, quick 2k)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--customers", type=int, help="seeded customers (default 100k, quick 5k)")
    parser.add_argument(
        "--noisy-rate",
        type=float,
        default=20.0,
        help=f"requests/s of each of the {NOISY_CLIENTS} clients asking random ids",
    )


@dataclass
class Plan:
    """Sizes and the seeded-random ids every run sends (the same for every server)."""

    customers: int
    requests: int
    clients: int
    noisy_rate: float
    rng: random.Random  # also picks the customers the notification-delay writes touch
    working: list[int]
    ids: list[int]
    warmup: list[int]


def make_plan(args) -> Plan:
    """The working set, the requested ids and the warm-up order, from a fixed seed."""
    customers = args.customers or (5_000 if args.quick else 100_000)
    requests = args.requests or (2_000 if args.quick else 20_000)
    rng = random.Random(42)
    working = sorted(rng.sample(range(1, customers + 1), min(WORKING_SET, customers)))
    ids = [rng.choice(working) for _ in range(requests)]
    warmup = rng.sample(working, len(working))  # every file once: each is verified, then a HIT
    return Plan(customers, requests, args.clients, args.noisy_rate, rng, working, ids, warmup)


@dataclass
class Stage:
    """The seeded database, the cache folder, the servers' environment and the API key."""

    url: str
    env: dict[str, str]
    key: str
    folder: Path
    rows: dict[str, int]


def prepare(work: Path, new_database, plan: Plan) -> Stage:
    """Seed the customers, build the working set's files with the real asset, make a key."""
    url = new_database("api")
    cache = work / "cache"
    env = harness.product_env(
        ("CRM_", "FB_", "DAGSTER"),
        CRM_DATABASE_URL=url,
        CRM_CACHE_DIR=str(cache),
        CRM_DATA_DIR=str(work / "data"),
        CRM_API_CACHE_TTL_SECONDS="3600",  # every file stays fresh for the whole run
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("CRM_")})
    rows = seed_customers(url, plan.customers)
    materialize_profiles(url, cache, plan.working)
    return Stage(url, env, create_api_key(url), cache / "customers", rows)


def measured_load(server: Server, plan: Plan, key: str, prefix: str) -> Run:
    """Every working-set file asked once (untimed), then the planned ids, timed, with the
    server's CPU seconds over the timed part."""
    load(server.port, plan.warmup, plan.clients, key, prefix=prefix)
    before = server.cpu_seconds()
    run = load(server.port, plan.ids, plan.clients, key, prefix=prefix)
    run.server_cpu_seconds = server.cpu_seconds() - before
    return run


def measure_ours(server: Server, plan: Plan, stage: Stage, noise: Noise):
    """On our server: the hits, the bare route, the hits idle and beside the noisy clients,
    all checked, then the notification delays; (runs by name, delays)."""
    key, folder = stage.key, stage.folder
    runs = {
        "ours": measured_load(server, plan, key, ROUTE),
        "bare": measured_load(server, plan, key, BARE_ROUTE),
    }
    # The same hits alone, then beside the clients asking random ids.
    runs["idle"] = load(server.port, plan.ids, plan.clients, key)
    runs["loaded"] = load(
        server.port,
        plan.ids,
        plan.clients,
        key,
        noisy=NOISY_CLIENTS,
        noisy_rate=plan.noisy_rate,
        id_space=plan.customers * NOISY_ID_SPACE,
        noise=noise,
    )
    # Checked before the writes below change the files.
    check(runs["ours"], "ours", folder, hits=True)
    check(runs["bare"], "bare", folder, hits=False)
    # Hits stay hits under the noise: its misses write other customers' files.
    check(runs["idle"], "idle", folder, hits=True)
    check(runs["loaded"], "loaded", folder, hits=True)
    # Last: these writes leave their customers' files stale for a moment.
    delays = notification_delays(stage.url, server.port, plan.working, key, plan.rng)
    return runs, delays


def measure_servers(plan: Plan, stage: Stage) -> tuple[dict[str, Run], Noise, list[float]]:
    """Ours, then the reference, then ours under granian, each its own server process."""
    runs: dict[str, Run] = {}
    noise = Noise()
    delays: list[float] = []
    for which in ("ours", "reference", "granian"):
        server = Server(which, stage.env)
        try:
            if which == "ours":
                ours, delays = measure_ours(server, plan, stage, noise)
                runs.update(ours)
            else:
                runs[which] = measured_load(server, plan, stage.key, ROUTE)
        finally:
            server.stop()
        if which != "ours":
            check(runs[which], which, stage.folder, hits=which == "granian")
    return runs, noise, delays


def _ms(run: Run, q: int) -> float:
    return harness.percentile(run.latencies, q) * 1000


def api_measurements(
    plan: Plan, runs: dict[str, Run], noise: Noise, delays: list[float]
) -> list[harness.Measurement]:
    """B5's four rows: hits vs the DB route, vs the bare route, vs granian, under noise."""
    ours, ref, bare, granian = runs["ours"], runs["reference"], runs["bare"], runs["granian"]
    idle, loaded = runs["idle"], runs["loaded"]
    delay_p99 = harness.percentile(delays, 99) * 1000
    noisy_rate = noise.requests / noise.seconds if noise.seconds else 0.0
    return [
        harness.measure(
            f"B5 GET /api/customers/{{id}} cache hit, {plan.clients} clients",
            ours.rate,
            ref.rate,
            "req/s",
            ">= 10",
            note=f"p99 {_ms(ours, 99):.1f} ms ours vs {_ms(ref, 99):.1f} ms reference",
        ),
        harness.measure(
            "B5 cache hit vs bare in-memory route, same server",
            ours.rate,
            bare.rate,
            "req/s",
            ">= 0.6",
            note=(
                f"p99 {_ms(ours, 99):.1f} ms vs {_ms(bare, 99):.1f} ms; notification delay p99 "
                f"{delay_p99:.1f} ms"
            ),
        ),
        harness.measure(
            "B5 cache hit: uvicorn (httptools, uvloop) vs granian",
            ours.rate,
            granian.rate,
            "req/s",
            ">= 0.9",
            note=f"p99 {_ms(ours, 99):.1f} ms uvicorn vs {_ms(granian, 99):.1f} ms granian",
        ),
        harness.measure(
            f"B5 hit p50 beside {NOISY_CLIENTS} clients asking random ids",
            _ms(loaded, 50),
            _ms(idle, 50),
            "ms",
            "<= 3",
            note=(
                f"{noisy_rate:,.0f} random-id req/s alongside; hit p99 {_ms(loaded, 99):.1f} ms "
                f"vs {_ms(idle, 99):.1f} ms idle"
            ),
        ),
    ]


def api_details(
    plan: Plan, rows: dict[str, int], runs: dict[str, Run], noise: Noise, delays: list[float]
) -> list[str]:
    """The lines under the table: sizes, each run's rate, latencies and CPU, the delays, the
    noise, and what was checked."""
    noisy_rate = noise.requests / noise.seconds if noise.seconds else 0.0
    noisy_p50 = harness.percentile(noise.latencies, 50) * 1000 if noise.latencies else 0.0
    delay_p50, delay_p99 = (harness.percentile(delays, q) * 1000 for q in (50, 99))
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(noise.statuses.items()))
    caches = ", ".join(f"{k}: {v:,}" for k, v in sorted(noise.cache.items()))
    return [
        f"{plan.requests:,} requests per run over {plan.clients} keep-alive connections, ids "
        f"drawn from {len(plan.working):,} of {plan.customers:,} customers ({rows['orders']:,} "
        f"orders, {rows['messages']:,} messages)",
        *(_line(label, runs[label]) for label in ("ours", "reference", "bare", "granian")),
        f"notification delay, commit -> the API no longer answers HIT ({len(delays)} psql "
        f"updates): p50 {delay_p50:.1f} ms, p99 {delay_p99:.1f} ms",
        _latency_line("idle", runs["idle"]),
        _latency_line("loaded", runs["loaded"]),
        f"loaded: {NOISY_CLIENTS} more connections asked random ids in "
        f"1..{plan.customers * 10:,} at up to {plan.noisy_rate:g}/s each: {noise.requests:,} "
        f"requests ({noisy_rate:,.0f}/s, p50 {noisy_p50:.2f} ms; {statuses}; X-Cache {caches})",
        "client, server and PostgreSQL share the machine's 2 cores; one uvicorn process",
        "all hit responses 200 (ours: all X-Cache HIT); sampled bodies equal the cache files",
        "every request sends Authorization: Bearer <key> (customers:read, analytics:read)",
    ]


def main() -> int:
    """Seed, build the working set's files, load each server in turn, report B5."""
    args = harness.parse_args(__doc__.splitlines()[0], _add_arguments)
    plan = make_plan(args)
    with harness.private_postgres("api-reads") as (work, new_database):
        stage = prepare(work, new_database, plan)
        runs, noise, delays = measure_servers(plan, stage)
        shutil.rmtree(work / "cache", ignore_errors=True)

    harness.report(
        "B5 cache-first reads on loopback (real API under uvicorn vs the route built from the DB)",
        api_measurements(plan, runs, noise, delays),
        args,
        details=api_details(plan, stage.rows, runs, noise, delays),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
