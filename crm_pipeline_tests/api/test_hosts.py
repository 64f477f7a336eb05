"""Trusted hosts: a foreign `Host` header (DNS rebinding) is refused before routing."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from crm_pipeline.api.hosts import allowed_hosts_for, host_allowed, host_name
from crm_pipeline.config import ConfigError, load_settings


def _get(url: str, path: str, host: str | None, key: str | None = None) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    if key:
        conn.putheader("Authorization", f"Bearer {key}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status == 400:
        assert response.getheader("content-type") == "application/problem+json"
        assert b"Invalid host" in body
    return response.status


def test_loopback_names_pass_and_anything_else_is_400(api, clean_db):
    port = urlsplit(api.url).port
    for host in (
        "localhost",
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "LOCALHOST",
    ):
        assert _get(api.url, "/health", host) == 200, host
    assert _get(api.url, "/api/analytics/summary", f"127.0.0.1:{port}", api.key) == 200
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::1", ""):
        for path in ("/health", "/api/customers", "/webhooks/facebook", "/docs"):
            assert _get(api.url, path, host, api.key) == 400, (host, path)
    assert _get(api.url, "/health", None) == 400  # HTTP/1.1 requires a Host


def test_configured_hosts_replace_the_defaults(clean_db, database_url, start_api):
    live = start_api(database_url, allowed_hosts=("crm.example.com", "*.corp.example"))
    assert _get(live.url, "/health", "crm.example.com") == 200
    assert _get(live.url, "/health", "api.corp.example:8443") == 200
    assert _get(live.url, "/health", "corp.example") == 400
    assert _get(live.url, "/health", "localhost") == 400


def test_host_parsing_and_matching():
    assert host_name("[::1]:8000") == "[::1]"
    assert host_name("Example.COM:80") == "example.com"
    assert host_name("example.com:") is None
    assert host_name("example.com:80x") is None
    assert host_allowed("a.b.example", ("*.example",))
    assert not host_allowed("badexample", ("*.example",))


def test_an_open_bind_needs_configured_hosts():
    assert allowed_hosts_for("127.0.0.1", ()) == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts_for("::1", ()) == ("localhost", "127.0.0.1", "[::1]")
    with pytest.raises(ConfigError, match="CRM_API_ALLOWED_HOSTS"):
        allowed_hosts_for("0.0.0.0", ())
    settings = load_settings({"CRM_API_ALLOWED_HOSTS": " CRM.example.com , *.corp.example "})
    assert settings.api.allowed_hosts == ("crm.example.com", "*.corp.example")
    assert allowed_hosts_for("0.0.0.0", settings.api.allowed_hosts) == settings.api.allowed_hosts
    with pytest.raises(ConfigError, match="not URLs"):
        load_settings({"CRM_API_ALLOWED_HOSTS": "https://crm.example.com/"})
