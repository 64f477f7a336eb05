"""Fixtures of the privacy tests."""

import pytest


@pytest.fixture(autouse=True)
def fast_governor(monkeypatch):
    """Real governor rules, with waits scaled down so the suite stays quick."""
    monkeypatch.setenv("CRM_GRAPH_BACKOFF_BASE_SECONDS", "0.01")
    monkeypatch.setenv("CRM_GRAPH_MAX_WAIT_SECONDS", "30")
