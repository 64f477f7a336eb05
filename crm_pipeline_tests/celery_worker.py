"""A real dagster-celery worker for the tests: a broker to reach, and the worker's processes.

The worker is started with the command docs/deployment.md ("Celery") gives operators, on a
queue and under a name of its own, so test sessions sharing the machine's broker never take
each other's steps; it is stopped (and every process it started with it) when the block ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from celery.utils.nodenames import host_format
from kombu import Connection

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIG = "deploy/celery/run_config.yaml"  # as the commands name it, from the repo root
DEFINITIONS_MODULE = "crm_pipeline.celery_definitions"
BIN = Path(sys.executable).parent
# The machine's brokers (docs: RabbitMQ and Redis on loopback), in order of preference.
BROKERS = (
    ("amqp://guest:guest@127.0.0.1:5672//", "rpc://"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
)
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0
# Celery's own line once the worker consumes: "<name>@<host> ready."
READY_LINE = re.compile(r"@\S+ ready\.$", re.M)


def reachable_broker() -> tuple[str, str]:
    """`(broker_url, result_backend)` of the first broker that answers.

    None answering fails the test on CI (`CI=true`), as an unreachable PostgreSQL does, and
    skips it elsewhere, saying why.
    """
    problems = []
    for broker, backend in BROKERS:
        try:
            with Connection(broker, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1, timeout=5)
            return broker, backend
        except Exception as exc:  # kombu raises the transport's own errors
            problems.append(f"{broker.split('://')[0]} on 127.0.0.1: {exc}")
    message = "no Celery broker reachable (" + "; ".join(problems) + ")"
    if os.environ.get("CI", "").strip().lower() in ("1", "true"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class CeleryWorker:
    """A running `dagster-celery worker start` and what identifies it on the broker."""

    process: subprocess.Popen
    queue: str
    nodename: str  # what Celery reports as the worker's hostname: "<name>@<host>"
    log: Path

    def pool_pids(self) -> set[int]:
        """Every process of the worker: the CLI, Celery's main process and its pool."""
        root = psutil.Process(self.process.pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}

    def output(self) -> str:
        """What the worker has logged so far."""
        return self.log.read_text(errors="replace")


def worker_command(queue: str, name: str) -> list[str]:
    """docs/deployment.md's worker command, on `queue` and named `name` (run from the repo root
    with this environment's bin first on PATH)."""
    return [
        *("dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", RUN_CONFIG),
        *("-q", queue, "-i", DEFINITIONS_MODULE, "-n", name),
    ]


def launch_command(job: str, tags: dict[str, str], *more_config: str) -> list[str]:
    """docs/deployment.md's command that runs `job` over the run tags `tags`; `more_config`
    are further run config files, merged over deploy/celery/run_config.yaml."""
    config = [arg for path in more_config for arg in ("-c", path)]
    return [
        *("dagster", "job", "execute", "-m", DEFINITIONS_MODULE, "-a", "defs", "-j", job),
        *("-c", RUN_CONFIG, *config, "--tags", json.dumps(tags)),
    ]


def command_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with this environment's bin first on PATH: the commands above, and the `celery`
    that dagster-celery starts, are this environment's."""
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


@contextmanager
def celery_worker(env: dict[str, str], log: Path) -> Iterator[CeleryWorker]:
    """Start a worker on a queue of its own; stop it and all its processes at the end."""
    name = f"crm-test-{uuid.uuid4().hex[:12]}"
    env = command_env(env)
    with log.open("wb") as out:
        # A session of its own: a Ctrl-C in the test's terminal does not reach it half-way (the
        # block below stops it in order), and its processes form one group to account for.
        process = subprocess.Popen(
            worker_command(name, name),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = CeleryWorker(process, queue=name, nodename=host_format(f"{name}@%h"), log=log)
    try:
        yield worker
    finally:
        _stop(worker)
        _delete_queue(env["CELERY_BROKER_URL"], worker.queue)


def wait_until_ready(worker: CeleryWorker) -> None:
    """Block until the worker consumes from its queue; fail with its log if it never does."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if READY_LINE.search(worker.output()):
            return
        if worker.process.poll() is not None:
            pytest.fail(f"the Celery worker exited early:\n{worker.output()}", pytrace=False)
        time.sleep(0.2)
    pytest.fail(f"the Celery worker was not ready in time:\n{worker.output()}", pytrace=False)


def _stop(worker: CeleryWorker) -> None:
    """Warm shutdown (SIGTERM to Celery's main process: running steps finish, the pool ends),
    then SIGKILL for anything left; afterwards no process of the worker remains."""
    group = worker.process.pid  # its own session: every process it started is in this group
    try:
        root = psutil.Process(group)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        root, tree = None, []
    for proc in (root.children() or [root]) if root else []:
        with suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT_SECONDS)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=STOP_TIMEOUT_SECONDS)
    # A process whose parent died early is no longer in the tree, but still in the group.
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    worker.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    assert not alive, f"worker processes left behind: {[p.pid for p in alive]}"


def _delete_queue(broker: str, queue: str) -> None:
    """The per-run queue (durable on RabbitMQ) and the exchange Celery made for it: removed, so
    runs leave nothing behind on the shared broker."""
    with suppress(Exception), Connection(broker, connect_timeout=3) as conn:
        conn.default_channel.queue_delete(queue)
        conn.default_channel.exchange_delete(queue)
