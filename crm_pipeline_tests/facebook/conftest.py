"""Fixtures for the Graph API emulator and client tests: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from graph_emulator import EmulatorData, GraphEmulator

_TOKEN = "EAAtest-token-0123456789abcdef"
_APP_SECRET = "app-secret-9876543210"


@pytest.fixture
def token() -> str:
    """The only access token the ``emulator`` fixture accepts."""
    return _TOKEN


@pytest.fixture
def app_secret() -> str:
    """An app secret for clients (the emulator ignores appsecret_proof)."""
    return _APP_SECRET


@pytest.fixture
def emulator(token: str) -> Iterator[GraphEmulator]:
    """A running emulator (seed 7) that only accepts ``token``."""
    with GraphEmulator(EmulatorData(seed=7), expected_token=token) as emu:
        yield emu


@pytest.fixture
def http_get():
    """A plain urllib GET, for checking the raw wire format without the SDK in between."""
    return _http_get


def _http_get(url: str) -> tuple[int, dict[str, Any], str, Any]:
    """GET ``url`` with urllib; returns (status, parsed JSON, raw body text, headers)."""
    # An empty ProxyHandler: test traffic must go straight to 127.0.0.1, whatever the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            raw = response.read().decode()
            return response.status, json.loads(raw), raw, response.headers
    except urllib.error.HTTPError as error:
        raw = error.read().decode()
        return error.code, json.loads(raw), raw, error.headers


@pytest.fixture
def emulator_process() -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """Start ``python -m graph_emulator *args`` (with ``env`` added); returns it and its URL.

    The URL comes from the ready line, the one JSON line the module prints once it listens.
    Whatever is still running at teardown is interrupted.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "graph_emulator", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        started.append(proc)
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] is True and ready["pid"] == proc.pid, ready
        return proc, ready["url"]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
