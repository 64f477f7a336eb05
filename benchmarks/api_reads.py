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
customers:read, analytics:read) before the servers start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
import orjson
import psutil
from fastapi import Path as PathParam
from fastapi import Request
from fastapi.responses import Response

WORKING_SET = 2_000  # customers whose files are requested (built by the asset beforehand)
SAMPLE_EVERY = 97  # check every 97th body against the cache file
NOISY_CLIENTS = 50
NOISY_ID_SPACE = 10  # random ids from 1 .. 10x the customers
ROUTE = "/api/customers/"
BARE_ROUTE = "/bench/bare/customers/"  # the same bytes from a dict: the stack's own limit
DELAY_WRITES = 200  # writes whose notification delay (commit -> API invalidated) is measured


# --- the servers (run in a child process: `--serve ours|reference --port P`) -------------------


def reference_app():
    """The real app with `GET /api/customers/{id}` answered from PostgreSQL on every request."""
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.problems import Problem
    from crm_pipeline.cache import customers
    from crm_pipeline.cache.registry import CUSTOMER_SCHEMA_VERSION
    from crm_pipeline.cachefile import dumps, envelope
    from crm_pipeline.db.changelog import reflected_watermark

    app = create_app()

    def customer_profile(
        request: Request, customer_id: int = PathParam(ge=1, le=2**63 - 1)
    ) -> Response:
        with request.app.state.db.snapshot() as conn:
            payload = customers.build_profiles(conn, [customer_id]).get(customer_id)
            watermark = reflected_watermark(conn)
        if payload is None:
            raise Problem(404, "Not found", "No customer with that id.")
        document = envelope(payload, watermark=watermark, schema_version=CUSTOMER_SCHEMA_VERSION)
        return Response(dumps(document), media_type="application/json")

    app.router.add_api_route("/api/customers/{customer_id}", customer_profile, methods=["GET"])
    app.router.routes.insert(0, app.router.routes.pop())  # matched before the cached route
    return app


def with_bare_route(app):
    """`app` plus BARE_ROUTE: the customer's file bytes from a dict in memory (read once), with
    the same key check, middleware and response class as the cached route. What the stack
    itself costs per request: our hit path can approach it, not pass it."""
    from fastapi import Security

    from crm_pipeline.api.auth import authenticate
    from crm_pipeline.config import load_settings

    folder = load_settings().cache_dir / "customers"
    bodies: dict[int, bytes] = {}

    def bare(customer_id: int = PathParam(ge=1, le=2**63 - 1)) -> Response:
        body = bodies.get(customer_id)
        if body is None:
            body = bodies[customer_id] = (folder / f"{customer_id}.json").read_bytes()
        return Response(body, media_type="application/json", headers={"X-Cache": "BARE"})

    app.router.add_api_route(
        BARE_ROUTE + "{customer_id}",
        bare,
        methods=["GET"],
        dependencies=[Security(authenticate, scopes=["customers:read"])],
    )
    return app


def granian_app():
    """The `ours` app for granian (a factory: granian imports it in its worker)."""
    from crm_pipeline.api.app import create_app

    return with_bare_route(create_app())


def serve(which: str, port: int) -> int:
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.server import build_server

    if which == "granian":
        from granian import Granian

        Granian(
            "api_reads:granian_app",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface="asgi",
            workers=1,
            loop="uvloop",
            http="1",
            log_enabled=False,
        ).serve()
        return 0
    app = with_bare_route(create_app()) if which == "ours" else reference_app()
    build_server(app, "127.0.0.1", port, log_level="warning").run()
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One API server process on a free loopback port."""

    def __init__(self, which: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", which, "--port", str(self.port)], env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the {which} server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the {which} server did not start")

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# --- the load generator -------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    samples: dict[int, bytes] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


async def _get(reader, writer, cid: int, key: str, prefix: str = ROUTE) -> tuple[int, str, bytes]:
    """One GET <prefix><cid> on a kept-alive connection: (status, X-Cache, body)."""
    writer.write(
        f"GET {prefix}{cid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode("ascii")
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    cache = "-"
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-cache":
            cache = value.strip().decode()
    return int(head[9:12]), cache, await reader.readexactly(length)


async def _client(
    port: int, ids: list[int], next_index, run: Run, key: str, prefix: str = ROUTE
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (i := next_index()) is not None:
            cid = ids[i]
            start = time.perf_counter()
            status, cache, body = await _get(reader, writer, cid, key, prefix)
            run.latencies.append(time.perf_counter() - start)
            run.statuses[status] = run.statuses.get(status, 0) + 1
            run.cache[cache] = run.cache.get(cache, 0) + 1
            if i % SAMPLE_EVERY == 0:
                run.samples[cid] = body
    finally:
        writer.close()


@dataclass
class Noise:
    """What the clients asking random ids got."""

    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


async def _noisy_client(
    port: int, rng: random.Random, id_space: int, rate: float, done, noise: Noise, key: str
) -> None:
    """Ask for random ids, at most `rate` per second, until `done` is set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    interval = 1 / rate
    due = time.perf_counter() + rng.random() * interval  # not all 50 in step
    try:
        while not done.is_set():
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            due = max(due + interval, time.perf_counter())
            start = time.perf_counter()
            status, cache, _ = await _get(reader, writer, rng.randint(1, id_space), key)
            noise.latencies.append(time.perf_counter() - start)
            noise.requests += 1
            noise.statuses[status] = noise.statuses.get(status, 0) + 1
            noise.cache[cache] = noise.cache.get(cache, 0) + 1
    finally:
        writer.close()


def load(
    port: int,
    ids: list[int],
    clients: int,
    key: str,
    *,
    noisy: int = 0,
    noisy_rate: float = 0.0,
    id_space: int = 0,
    noise: Noise | None = None,
    prefix: str = ROUTE,
) -> Run:
    """Send GET /api/customers/<id> for every id over `clients` keep-alive connections, while
    `noisy` more connections ask for random ids in 1..`id_space` (at most `noisy_rate`/s each)."""
    import uvloop

    run = Run()
    counter = iter(range(len(ids)))
    rng = random.Random(7)

    def next_index() -> int | None:
        return next(counter, None)

    async def main() -> None:
        done = asyncio.Event()
        noisy_tasks = [
            asyncio.create_task(
                _noisy_client(
                    port, random.Random(rng.random()), id_space, noisy_rate, done, noise, key
                )
            )
            for _ in range(noisy)
        ]
        if noisy_tasks:
            await asyncio.sleep(1.0)  # the noise is under way before the hits are timed
        started = time.perf_counter()
        try:
            await asyncio.gather(
                *(_client(port, ids, next_index, run, key, prefix) for _ in range(clients))
            )
            run.seconds = time.perf_counter() - started
        finally:
            done.set()
            await asyncio.gather(*noisy_tasks)
        if noise is not None:
            noise.seconds = time.perf_counter() - started

    cpu = time.process_time()
    uvloop.run(main())
    run.cpu_seconds = time.process_time() - cpu
    return run


def notification_delays(
    url: str, port: int, working: list[int], key: str, rng: random.Random
) -> list[float]:
    """Seconds from a psql-style commit to the first GET of that customer not answered HIT,
    polled over one kept-alive connection, for DELAY_WRITES writes."""
    import http.client

    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}"}
    delays = []
    try:
        for n in range(DELAY_WRITES):
            cid = rng.choice(working)
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE customers SET name = :n WHERE id = :i"),
                    {"n": f"delay {n}", "i": cid},
                )
            committed = time.perf_counter()
            deadline = committed + 10
            while True:
                connection.request("GET", f"{ROUTE}{cid}", headers=headers)
                response = connection.getresponse()
                response.read()
                if response.getheader("X-Cache") != "HIT":
                    delays.append(time.perf_counter() - committed)
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit(f"customer {cid}: still a HIT 10 s after a write")
            # Then until its file is rebuilt (a HIT again), so later runs see only hits.
            while True:
                connection.request("GET", f"{ROUTE}{cid}", headers=headers)
                response = connection.getresponse()
                response.read()
                if response.getheader("X-Cache") == "HIT":
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit(f"customer {cid}: not rebuilt 10 s after a write")
    finally:
        connection.close()
        engine.dispose()
    return delays


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


# --- the benchmark ------------------------------------------------------------------------------


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
    parser.add_argument("--serve", choices=["ours", "reference", "granian"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)


def main() -> int:
    args = harness.parse_args(__doc__.splitlines()[0], _add_arguments)
    if args.serve:
        return serve(args.serve, args.port)
    from cache_rebuild import materialize_profiles, seed_customers

    customers = args.customers or (5_000 if args.quick else 100_000)
    requests = args.requests or (2_000 if args.quick else 20_000)
    rng = random.Random(42)
    working = sorted(rng.sample(range(1, customers + 1), min(WORKING_SET, customers)))
    ids = [rng.choice(working) for _ in range(requests)]
    warmup = rng.sample(working, len(working))  # every file once: each is verified, then a HIT

    with harness.private_postgres("api-reads") as (work, new_database):
        url = new_database("api")
        cache = work / "cache"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER"))},
            "CRM_DATABASE_URL": url,
            "CRM_CACHE_DIR": str(cache),
            "CRM_DATA_DIR": str(work / "data"),
            "CRM_API_CACHE_TTL_SECONDS": "3600",  # every file stays fresh for the whole run
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("CRM_")})
        rows = seed_customers(url, customers)
        materialize_profiles(url, cache, working)
        key = create_api_key(url)
        folder = cache / "customers"

        runs: dict[str, Run] = {}
        noise = Noise()
        delays: list[float] = []
        for which in ("ours", "reference", "granian"):
            server = Server(which, env)
            try:
                load(server.port, warmup, args.clients, key)
                before = server.cpu_seconds()
                runs[which] = load(server.port, ids, args.clients, key)
                runs[which].server_cpu_seconds = server.cpu_seconds() - before
                if which == "ours":
                    load(server.port, warmup, args.clients, key, prefix=BARE_ROUTE)
                    before = server.cpu_seconds()
                    runs["bare"] = load(server.port, ids, args.clients, key, prefix=BARE_ROUTE)
                    runs["bare"].server_cpu_seconds = server.cpu_seconds() - before
                    # The same hits alone, then beside the clients asking random ids.
                    runs["idle"] = load(server.port, ids, args.clients, key)
                    runs["loaded"] = load(
                        server.port,
                        ids,
                        args.clients,
                        key,
                        noisy=NOISY_CLIENTS,
                        noisy_rate=args.noisy_rate,
                        id_space=customers * NOISY_ID_SPACE,
                        noise=noise,
                    )
                    # Checked before the writes below change the files.
                    check(runs[which], which, folder, hits=True)
                    check(runs["bare"], "bare", folder, hits=False)
                    # Hits stay hits under the noise: its misses write other customers' files.
                    check(runs["idle"], "idle", folder, hits=True)
                    check(runs["loaded"], "loaded", folder, hits=True)
                    # Last: these writes leave their customers' files stale for a moment.
                    delays = notification_delays(url, server.port, working, key, rng)
            finally:
                server.stop()
            if which != "ours":
                check(runs[which], which, folder, hits=which == "granian")
        shutil.rmtree(cache, ignore_errors=True)

    ours, ref, bare, granian = runs["ours"], runs["reference"], runs["bare"], runs["granian"]

    def ms(run: Run, q: int) -> float:
        return harness.percentile(run.latencies, q) * 1000

    measurement = harness.measure(
        f"B5 GET /api/customers/{{id}} cache hit, {args.clients} clients",
        ours.rate,
        ref.rate,
        "req/s",
        ">= 10",
        note=f"p99 {ms(ours, 99):.1f} ms ours vs {ms(ref, 99):.1f} ms reference",
    )
    delay_p99 = harness.percentile(delays, 99) * 1000
    stack_limit = harness.measure(
        "B5 cache hit vs bare in-memory route, same server",
        ours.rate,
        bare.rate,
        "req/s",
        ">= 0.6",
        note=(
            f"p99 {ms(ours, 99):.1f} ms vs {ms(bare, 99):.1f} ms; notification delay p99 "
            f"{delay_p99:.1f} ms"
        ),
    )
    stack = harness.measure(
        "B5 cache hit: uvicorn (httptools, uvloop) vs granian",
        ours.rate,
        granian.rate,
        "req/s",
        ">= 0.9",
        note=f"p99 {ms(ours, 99):.1f} ms uvicorn vs {ms(granian, 99):.1f} ms granian",
    )
    idle, loaded = runs["idle"], runs["loaded"]
    noisy_rate = noise.requests / noise.seconds if noise.seconds else 0.0
    noisy_p50 = harness.percentile(noise.latencies, 50) * 1000 if noise.latencies else 0.0
    isolation = harness.measure(
        f"B5 hit p50 beside {NOISY_CLIENTS} clients asking random ids",
        ms(loaded, 50),
        ms(idle, 50),
        "ms",
        "<= 3",
        note=(
            f"{noisy_rate:,.0f} random-id req/s alongside; hit p99 {ms(loaded, 99):.1f} ms "
            f"vs {ms(idle, 99):.1f} ms idle"
        ),
    )
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(noise.statuses.items()))
    caches = ", ".join(f"{k}: {v:,}" for k, v in sorted(noise.cache.items()))
    harness.report(
        "B5 cache-first reads on loopback (real API under uvicorn vs the route built from the DB)",
        [measurement, stack_limit, stack, isolation],
        args,
        details=[
            f"{requests:,} requests per run over {args.clients} keep-alive connections, ids "
            f"drawn from {len(working):,} of {customers:,} customers ({rows['orders']:,} "
            f"orders, {rows['messages']:,} messages)",
            _line("ours", ours),
            _line("reference", ref),
            _line("bare", bare),
            _line("granian", granian),
            f"notification delay, commit -> the API no longer answers HIT ({len(delays)} psql "
            f"updates): p50 {harness.percentile(delays, 50) * 1000:.1f} ms, p99 {delay_p99:.1f} ms",
            _latency_line("idle", idle),
            _latency_line("loaded", loaded),
            f"loaded: {NOISY_CLIENTS} more connections asked random ids in 1..{customers * 10:,} "
            f"at up to {args.noisy_rate:g}/s each: {noise.requests:,} requests "
            f"({noisy_rate:,.0f}/s, p50 {noisy_p50:.2f} ms; {statuses}; X-Cache {caches})",
            "client, server and PostgreSQL share the machine's 2 cores; one uvicorn process",
            "all hit responses 200 (ours: all X-Cache HIT); sampled bodies equal the cache files",
            "every request sends Authorization: Bearer <key> (customers:read, analytics:read)",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
