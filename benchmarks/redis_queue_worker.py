"""B7a's reference: the seed's design, a job queue on Redis and a worker process.

    python benchmarks/redis_queue_worker.py DATABASE_URL CACHE_DIR QUEUE

Pops customer ids pushed by the writer after each commit (BRPOP on QUEUE at the machine's
Redis, 127.0.0.1:6379) and rebuilds that customer's file with the same builder and the same
forward-only publish the cache worker uses. Stops on the job "stop".
"""

import sys

import harness  # first: puts the repo root on sys.path
import redis

from crm_pipeline.cache.rebuild import rebuild_customers
from crm_pipeline.db.engine import get_engine, read_snapshot


def main(url: str, cache_dir: str, queue: str) -> int:
    engine = get_engine(url)
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.rpush(f"{queue}:ready", "1")
    while True:
        _, job = client.brpop([queue])
        if job == b"stop":
            return 0
        with read_snapshot(engine) as conn:
            rebuild_customers(conn, harness.Path(cache_dir), [int(job)])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
