"""Fixtures for the Graph API emulator and client tests: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
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
