"""B5 reads: `GET /api/customers/{id}` served from the cache vs built from PostgreSQL per request.

    .venv/bin/python benchmarks/api_reads.py [--quick] [--requests 20000] [--clients 8]

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


# --- the servers (run in a child process: `--serve ours|reference --port P`) -------------------


def reference_app():
    """The real app with `GET /api/customers/{id}` answered from PostgreSQL on every request."""
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.problems import Problem
    from crm_pipeline.cachefile import dumps, envelope
    from crm_pipeline.db.changelog import reflected_watermark
    from crm_pipeline.defs.cache import customers
    from crm_pipeline.defs.cache.assets import CUSTOMER_SCHEMA_VERSION

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


def serve(which: str, port: int) -> int:
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.server import build_server

    app = create_app() if which == "ours" else reference_app()
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


async def _client(port: int, ids: list[int], next_index, run: Run) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (i := next_index()) is not None:
            cid = ids[i]
            start = time.perf_counter()
            writer.write(
                f"GET /api/customers/{cid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii")
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
            body = await reader.readexactly(length)
            run.latencies.append(time.perf_counter() - start)
            status = int(head[9:12])
            run.statuses[status] = run.statuses.get(status, 0) + 1
            run.cache[cache] = run.cache.get(cache, 0) + 1
            if i % SAMPLE_EVERY == 0:
                run.samples[cid] = body
    finally:
        writer.close()


def load(port: int, ids: list[int], clients: int) -> Run:
    """Send GET /api/customers/<id> for every id over `clients` keep-alive connections."""
    import uvloop

    run = Run()
    counter = iter(range(len(ids)))

    def next_index() -> int | None:
        return next(counter, None)

    async def main() -> None:
        await asyncio.gather(*(_client(port, ids, next_index, run) for _ in range(clients)))

    cpu, start = time.process_time(), time.perf_counter()
    uvloop.run(main())
    run.seconds = time.perf_counter() - start
    run.cpu_seconds = time.process_time() - cpu
    return run


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


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, help="requests per run (default 20k, quick 2k)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--customers", type=int, help="seeded customers (default 100k, quick 5k)")
    parser.add_argument("--serve", choices=["ours", "reference"], help=argparse.SUPPRESS)
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
    warmup = [rng.choice(working) for _ in range(min(1_000, requests // 10))]

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
        folder = cache / "customers"

        runs: dict[str, Run] = {}
        for which in ("ours", "reference"):
            server = Server(which, env)
            try:
                load(server.port, warmup, args.clients)
                before = server.cpu_seconds()
                runs[which] = load(server.port, ids, args.clients)
                runs[which].server_cpu_seconds = server.cpu_seconds() - before
            finally:
                server.stop()
            check(runs[which], which, folder, hits=which == "ours")
        shutil.rmtree(cache, ignore_errors=True)

    ours, ref = runs["ours"], runs["reference"]

    def ms(run: Run, q: int) -> float:
        return harness.percentile(run.latencies, q) * 1000

    measurement = harness.measure(
        f"B5 GET /api/customers/{{id}} cache hit, {args.clients} clients",
        ours.rate,
        ref.rate,
        "req/s",
        ">= 5",
        note=f"p99 {ms(ours, 99):.1f} ms ours vs {ms(ref, 99):.1f} ms reference",
    )
    harness.report(
        "B5 cache-first reads on loopback (real API under uvicorn vs the route built from the DB)",
        [measurement],
        args,
        details=[
            f"{requests:,} requests per run over {args.clients} keep-alive connections, ids "
            f"drawn from {len(working):,} of {customers:,} customers ({rows['orders']:,} "
            f"orders, {rows['messages']:,} messages)",
            _line("ours", ours),
            _line("reference", ref),
            "client, server and PostgreSQL share the machine's 2 cores; one uvicorn process",
            "all responses 200 (ours: all X-Cache HIT); sampled bodies equal the cache files",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
