"""B5's load generator: keep-alive HTTP/1.1 connections driven by asyncio on uvloop.

Much cheaper per request than httpx, so it takes little of the cores the server and
PostgreSQL also use (its CPU time is measured). `load` sends a fixed list of ids over a few
connections, optionally beside rate-limited "noisy" connections asking random ids;
`notification_delays` times a write until the API stops answering HIT for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from customer_data import rename_customer

ROUTE = "/api/customers/"
SAMPLE_EVERY = 97  # keep every 97th body, to check against the cache file
DELAY_WRITES = 200  # writes whose notification delay (commit -> API invalidated) is measured


@dataclass
class Run:
    """What the timed clients of one `load` got (and, set by the caller, the server's CPU)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    samples: dict[int, bytes] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Requests per second over the run."""
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


def _poll_until_hit(connection, cid: int, headers: dict, hit: bool, deadline: float) -> None:
    """GET customer `cid` over `connection` until its X-Cache is HIT (`hit`) or is not."""
    while True:
        connection.request("GET", f"{ROUTE}{cid}", headers=headers)
        response = connection.getresponse()
        response.read()
        if (response.getheader("X-Cache") == "HIT") == hit:
            return
        if time.perf_counter() > deadline:
            state = "not rebuilt" if hit else "still a HIT"
            raise SystemExit(f"customer {cid}: {state} 10 s after a write")


def notification_delays(
    url: str, port: int, working: list[int], key: str, rng: random.Random
) -> list[float]:
    """Seconds from a psql-style commit to the first GET of that customer not answered HIT,
    polled over one kept-alive connection, for DELAY_WRITES writes."""
    import http.client

    from sqlalchemy import create_engine

    engine = create_engine(url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}"}
    delays = []
    try:
        for n in range(DELAY_WRITES):
            cid = rng.choice(working)
            committed = rename_customer(engine, cid, f"delay {n}")
            deadline = committed + 10
            _poll_until_hit(connection, cid, headers, hit=False, deadline=deadline)
            delays.append(time.perf_counter() - committed)
            # Then until its file is rebuilt (a HIT again), so later runs see only hits.
            _poll_until_hit(connection, cid, headers, hit=True, deadline=deadline)
    finally:
        connection.close()
        engine.dispose()
    return delays
