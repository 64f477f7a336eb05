"""`crm-pipeline api-keys` and `crm-pipeline serve` as an operator uses them, end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

CLI = str(Path(sys.executable).with_name("crm-pipeline"))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(database_url, tmp_path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    return {
        **base,
        "CRM_DATABASE_URL": database_url,
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
        "CRM_DATA_DIR": str(tmp_path / "data"),
    }


def _create(env, name: str, scopes: str) -> str:
    result = _cli(env, "api-keys", "create", "--name", name, "--scopes", scopes)
    assert result.returncode == 0, result.stderr
    [key] = re.findall(r"^crm_[A-Za-z0-9_-]{43}$", result.stdout, re.MULTILINE)
    return key


def test_keys_are_shown_once_stored_hashed_and_listed_without_secrets(clean_db, env):
    key = _create(env, "analyst", "analytics:read")
    assert len(key) == 4 + 43  # 32 random bytes, URL-safe base64
    with clean_db.connect() as conn:
        stored = conn.execute(text("SELECT * FROM api_keys")).mappings().one()
    assert key not in {str(v) for v in stored.values()}
    assert stored["key_hash"] != key and len(stored["key_hash"]) == 64

    listed = _cli(env, "api-keys", "list")
    assert listed.returncode == 0
    assert "analyst" in listed.stdout and "analytics:read" in listed.stdout
    assert key not in listed.stdout and stored["key_hash"] not in listed.stdout
    assert key[:8] in listed.stdout  # the prefix tells keys apart

    again = _cli(env, "api-keys", "create", "--name", "analyst", "--scopes", "crm:write")
    assert again.returncode == 1 and "revoke it first" in again.stderr
    bad = _cli(env, "api-keys", "create", "--name", "x", "--scopes", "admin")
    assert bad.returncode == 1 and "unknown scope" in bad.stderr

    assert _cli(env, "api-keys", "revoke", "analyst").returncode == 0
    assert _cli(env, "api-keys", "revoke", "analyst").returncode == 1
    assert "revoked" in _cli(env, "api-keys", "list").stdout


@pytest.mark.slow
def test_a_running_server_enforces_keys_scopes_hosts_and_revocation(clean_db, env):
    from crm_pipeline_tests.api.test_serve import _free_port

    with clean_db.begin() as conn:
        cid = conn.execute(text("INSERT INTO customers (name) VALUES ('Ada') RETURNING id"))
        cid = cid.scalar_one()
    analyst = _create(env, "analyst", "analytics:read")
    clerk = _create(env, "clerk", "customers:read,crm:write")
    port = _free_port()
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def get(path: str, key: str | None = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(url + path, headers={**headers, **kw}, trust_env=False, timeout=10)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert get(f"/api/customers/{cid}").status_code == 401
        assert get("/api/analytics/summary", analyst).status_code == 200
        assert get(f"/api/customers/{cid}", analyst).status_code == 403
        assert get(f"/api/customers/{cid}", clerk).status_code == 200
        write = httpx.post(
            f"{url}/api/customers",
            json={"name": "Bo"},
            headers={"Authorization": f"Bearer {analyst}"},
            trust_env=False,
        )
        assert write.status_code == 403
        assert get("/health", Host="evil.example").status_code == 400

        assert _cli(env, "api-keys", "revoke", "clerk").returncode == 0
        revoked = time.monotonic()
        while get(f"/api/customers/{cid}", clerk).status_code != 401:
            assert time.monotonic() - revoked < 2, "revoked key still accepted after 2 s"
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    for key in (analyst, clerk):
        assert key not in output


def test_serve_refuses_an_open_bind_without_allowed_hosts(env):
    result = _cli(env, "serve", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    assert "CRM_API_ALLOWED_HOSTS" in result.stderr
