"""The emulator as the product meets it: a child process, reached over HTTP, stopped with us."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import psutil
import pytest
from graph_emulator import EmulatorData, GraphEmulator

from crm_pipeline import local_emulator
from crm_pipeline.config import ConfigError, load_settings
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.local_emulator import (
    EMULATOR_MISSING,
    discover,
    emulator_in_this_process,
    emulator_process,
)

# What ask_for_emulator_in_this_process writes: recorded so that every test restores them.
WRITTEN = ("FB_GRAPH_URL", "CRM_EMULATOR_URL", "FB_AD_ACCOUNT_IDS", "FB_PAGE_ID", "FB_ACCESS_TOKEN")


@pytest.fixture(autouse=True)
def _restored_environment(monkeypatch):
    for name in WRITTEN:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _refuses(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _emulator_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "graph_emulator" in " ".join(child.cmdline())
    ]


def test_a_child_process_in_its_own_session_learned_over_http():
    with emulator_process() as url:
        (child,) = _emulator_children()
        assert os.getsid(child.pid) == child.pid != os.getsid(0)  # its own session
        found = discover(url)
        assert found.url == url and url.startswith("http://127.0.0.1:")
        assert found.ad_account_ids == tuple(EmulatorData().account_ids)
        assert found.page_id == EmulatorData().page_id
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert _refuses(url)


def test_the_child_stops_when_its_parent_dies():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from crm_pipeline.local_emulator import emulator_process\n"
            "with emulator_process() as url:\n"
            "    print(url, flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = parent.stdout.readline().strip()
    (child,) = [c for c in psutil.Process(parent.pid).children() if "graph_emulator" in c.cmdline()]
    parent.send_signal(signal.SIGKILL)  # no cleanup runs: only the closed pipe tells the child
    parent.wait(10)
    child.wait(10)
    assert _refuses(url)


def test_asked_for_and_nothing_running_starts_a_private_one(monkeypatch):
    monkeypatch.setenv("FB_GRAPH_URL", "emulator")
    monkeypatch.setenv("FB_ACCESS_TOKEN", "EAAB-a-real-token")
    with emulator_in_this_process(load_settings()) as emulator:
        settings = load_settings()
        assert settings.emulator_url == emulator.url
        assert settings.ad_account_ids == ("act_1001", "act_1002")
        assert settings.page_id == "2001"
        assert settings.access_token is None  # a real token never goes to the emulator
        assert len(_emulator_children()) == 1
    assert _refuses(emulator.url)


def test_configured_accounts_and_page_narrow_what_is_synced(monkeypatch):
    monkeypatch.setenv("FB_GRAPH_URL", "emulator")
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1002")
    with emulator_in_this_process(load_settings()):
        settings = load_settings()
        assert (settings.ad_account_ids, settings.page_id) == (("act_1002",), "2001")


def test_a_running_emulator_is_asked_not_started(monkeypatch):
    with GraphEmulator(EmulatorData()) as running:
        monkeypatch.setenv("FB_GRAPH_URL", "emulator")
        monkeypatch.setenv("CRM_EMULATOR_URL", running.url)
        with emulator_in_this_process(load_settings()) as emulator:
            assert emulator.url == running.url and not _emulator_children()
            assert emulator.ad_account_ids == ("act_1001", "act_1002")
        asked = [r.path for r in running.requests]
        assert asked == ["/v26.0/me/adaccounts", "/v26.0/me/accounts"]
        running.reset_requests()
        # Everything given: nothing to start, nothing to ask.
        monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1001")
        monkeypatch.setenv("FB_PAGE_ID", "2001")
        with emulator_in_this_process(load_settings()) as emulator:
            assert emulator.ad_account_ids == ("act_1001",)
        assert running.requests == [] and not _emulator_children()


def test_the_demo_always_runs_its_own_and_takes_everything(monkeypatch):
    monkeypatch.setenv("CRM_EMULATOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FB_AD_ACCOUNT_IDS", "act_1002")
    with emulator_in_this_process(load_settings(), demo=True) as emulator:
        assert emulator.url != "http://127.0.0.1:9"
        assert load_settings().ad_account_ids == ("act_1001", "act_1002")
        assert load_settings().uses_emulator


def test_not_asked_for_changes_nothing(monkeypatch):
    with emulator_in_this_process(load_settings()) as emulator:
        assert emulator is None and not _emulator_children()
        assert load_settings().graph_url is None


def test_a_missing_package_is_a_clear_config_error(monkeypatch):
    monkeypatch.setattr(local_emulator, "EMULATOR_MODULE", "graph_emulator_not_installed")
    with pytest.raises(ConfigError) as caught, emulator_process():
        pass
    assert str(caught.value) == EMULATOR_MISSING
    # The same when only the child finds out (the package vanished under a running program).
    monkeypatch.setattr(local_emulator, "emulator_installed", lambda: True)
    with pytest.raises(ConfigError) as caught, emulator_process():
        pass
    assert str(caught.value) == EMULATOR_MISSING


def test_an_emulator_that_does_not_start_says_why():
    expected = "did not start: .*latency-ms must not be negative"
    with pytest.raises(ConfigError, match=expected), emulator_process("--latency-ms", "-1"):
        pass


def test_a_run_asking_for_the_emulator_gets_a_private_process(monkeypatch):
    monkeypatch.setenv("FB_GRAPH_URL", "emulator")
    started = time.monotonic()
    with GraphApiResource().session() as session:
        assert session.emulated and session.server.startswith("http://127.0.0.1:")
        assert session.account_ids == ("act_1001", "act_1002")
        assert session.page_id == "2001"
        assert len(list(session.client.iter_campaigns("act_1001"))) == 2
        (child,) = _emulator_children()
    assert time.monotonic() - started < 10
    child.wait(10)
    assert _refuses(session.server)
