"""`crm-pipeline dev` on embedded defaults: UI and API up, one Ctrl-C, nothing left behind."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from crm_pipeline.dev import DEV_APP_SECRET, DEV_VERIFY_TOKEN
from crm_pipeline.facebook.emulator.webhooks import leadgen_payload, post_webhook

CLI = str(Path(sys.executable).with_name("crm-pipeline"))
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, key: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _asset_keys(dagster_url: str) -> set[str]:
    query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    request = urllib.request.Request(
        f"{dagster_url}/graphql", data=query, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            nodes = json.loads(response.read())["data"]["assetNodes"]
    except (OSError, KeyError, TypeError, ValueError):
        return set()
    return {"/".join(n["assetKey"]["path"]) for n in nodes}


def _ours(data_dir: Path) -> list[psutil.Process]:
    """Every live process started for this dev session (they all carry its CRM_DATA_DIR)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("CRM_DATA_DIR", "").startswith(str(data_dir)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text(errors='replace')[-4000:]}")


def test_dev_serves_ui_and_api_and_one_interrupt_stops_everything(tmp_path):
    data_dir = tmp_path / "crm"
    dagster_port, api_port = _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))},
        "CRM_DATA_DIR": str(data_dir),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
    }
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        # Its own session, so the SIGINT below reaches exactly what a terminal's Ctrl-C would.
        dev = subprocess.Popen(
            [CLI, "dev", "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dagster_url, api_url = f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{api_port}"
    try:
        _wait(lambda: _get(f"{api_url}/health")[0] == 200, 120, "the API", log)
        _wait(
            lambda: {"analytics_summary", "customer_profiles_cache"} <= _asset_keys(dagster_url),
            180,
            "the Dagster UI to load our definitions",
            log,
        )
        # Dev webhook credentials are in place: Meta's handshake and a signed event work.
        status, body = _get(
            f"{api_url}/webhooks/facebook?hub.mode=subscribe"
            f"&hub.verify_token={DEV_VERIFY_TOKEN}&hub.challenge=4242"
        )
        assert (status, body) == (200, b"4242")
        payload = leadgen_payload("1", "2", "3", None, 1_700_000_000)
        assert post_webhook(f"{api_url}/webhooks/facebook", payload, DEV_APP_SECRET) == 200

        # The banner prints a local all-scopes key, and the API accepts it.
        [key] = re.findall(r"api key\s+(crm_\S+)", log.read_text(errors="replace"))
        assert _get(f"{api_url}/api/customers", key)[0] == 200
        assert _get(f"{api_url}/api/customers")[0] == 401

        started = _ours(data_dir)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "dagster" in names and "serve" in names and "postgres" in names, names
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        code = dev.wait(120)
    assert code == 0, log.read_text(errors="replace")[-4000:]
    leftovers = _ours(data_dir)
    assert not leftovers, [" ".join(p.cmdline()) for p in leftovers]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in started)
