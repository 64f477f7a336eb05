"""Finding and stopping every process a command started, however deep.

Dagster's daemon and webserver start gRPC code servers in sessions of their own, so killing the
daemon's process group misses them and they outlive it. Every process we start inherits our
environment, so a variable unique to one session (a temp `DAGSTER_HOME`, a dev-session id)
finds all of them, wherever they sit in the process tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import psutil


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes of this user whose environment has `name=value`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(name) == value:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_processes_with_env(name: str, value: str, timeout: float = 10.0) -> int:
    """SIGTERM every process carrying `name=value`, SIGKILL what is left; return how many."""
    procs = processes_with_env(name, value)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return len(procs)


def stop_session_leader(
    process: subprocess.Popen, *, env_name: str, env_value: str, timeout: float = 30.0
) -> None:
    """Stop a child started with `start_new_session=True` and everything it started.

    SIGTERM to its group (a daemon shuts down cleanly on it), SIGKILL if it does not exit in
    `timeout`, then the processes outside its group that still carry `env_name=env_value`.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    stop_processes_with_env(env_name, env_value)
