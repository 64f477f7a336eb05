"""`serve()` in a subprocess, configured only by environment variables, as the CLI runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from graph_emulator.webhooks import leadgen_payload, post_webhook

from crm_pipeline_tests.api.conftest import APP_SECRET, VERIFY_TOKEN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_from_environment_and_logs_no_secrets(clean_db, database_url, dirs):
    port = _free_port()
    env = {
        **os.environ,
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(dirs["cache"]),
        "FB_APP_SECRET": APP_SECRET,
        "FB_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from crm_pipeline.api.server import serve; serve('127.0.0.1', {port})",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            handshake = client.get(
                "/webhooks/facebook",
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": VERIFY_TOKEN,
                    "hub.challenge": "42",
                },
            )
            assert handshake.text == "42"
        payload = leadgen_payload("2001", "1460000000000001", "777", None, 1767225600)
        assert post_webhook(f"{url}/webhooks/facebook", payload, APP_SECRET) == 200
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    assert "GET /webhooks/facebook?" in output  # the access log is on ...
    assert "hub.verify_token=***" in output  # ... with the token masked
    assert VERIFY_TOKEN not in output
    assert APP_SECRET not in output
