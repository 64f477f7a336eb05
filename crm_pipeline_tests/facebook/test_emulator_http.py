"""The emulator's HTTP layer: HTTP/1.1 keep-alive, routing, and the same answers as its pure
request handler."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from datetime import date
from urllib.parse import urlencode, urlsplit

import pytest
from graph_emulator import EmulatorData, GraphEmulator

from crm_pipeline.facebook.client import GraphClient

DROPPED = ("x-fb-trace-id", "date", "content-length", "content-type")


def _connection(emu: GraphEmulator) -> http.client.HTTPConnection:
    parts = urlsplit(emu.url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def test_one_connection_serves_many_requests(emulator, token):
    connection = _connection(emulator)
    sockets = []
    for _ in range(3):
        connection.request("GET", f"/v26.0/act_1001/campaigns?access_token={token}")
        response = connection.getresponse()
        response.read()
        assert (response.status, response.version) == (200, 11)
        assert response.getheader("connection") != "close"
        sockets.append(connection.sock)
    connection.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    assert emulator.connections == 1 and len(emulator.requests) == 3


def test_one_sdk_sync_opens_one_connection(emulator, token):
    """The SDK's pooled session reuses its connection for every page and edge of a sync."""
    client = GraphClient(emulator.url, token, timeout=10)
    for account in ("act_1001", "act_1002"):
        rows = list(client.iter_insights(account, date(2026, 6, 1), date(2026, 6, 30), limit=25))
        assert len(rows) == 12 * 30
        for edge in (client.iter_campaigns, client.iter_adsets, client.iter_ads):
            assert list(edge(account))
    assert len(emulator.requests) == client.calls > 30
    assert emulator.connections == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v26.0/act_1001/campaigns?fields=id,name&limit=1", b""),
        ("GET", "/v26.0/me/adaccounts?fields=id,currency", b""),
        ("GET", "/v26.0/2001/leadgen_forms", b""),
        ("GET", "/v26.0/act_1001/insights?level=ad", b""),  # code 100: no time_range
        ("GET", "/act_1001/campaigns", b""),  # unversioned: code 2500
        ("GET", "/v26.0/", b""),  # no node: code 100
        ("PUT", "/v26.0/act_1001/campaigns", b""),  # a Graph error, not a bare 405
        ("POST", "/v26.0/act_1001/insights", b"level=ad&time_increment=1&fields=ad_id"),
    ],
)
def test_http_answers_are_the_pure_handlers(token, method, path, body):
    """Two emulators on the same data: one asked over HTTP, the other through handle()."""
    with GraphEmulator(EmulatorData(), expected_token=token) as served:
        pure = GraphEmulator(EmulatorData(), expected_token=token, port=urlsplit(served.url).port)
        query = ("&" if "?" in path else "?") + urlencode({"access_token": token})
        status, answer, headers = pure.handle(method, path + query, body)
        connection = _connection(served)
        connection.request(
            method,
            path + query,
            body=body or None,
            headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {},
        )
        response = connection.getresponse()
        raw = response.read()
        connection.close()
    assert response.status == status
    assert response.getheader("content-type") == "application/json; charset=UTF-8"
    assert raw.decode() == json.dumps(answer, separators=(",", ":")).replace(
        answer.get("error", {}).get("fbtrace_id", "-"),
        json.loads(raw).get("error", {}).get("fbtrace_id", "-"),
    )
    served_headers = {k.lower(): v for k, v in response.getheaders() if k.lower() not in DROPPED}
    assert served_headers == {k.lower(): v for k, v in headers.items() if k != "x-fb-trace-id"}


def test_stop_releases_the_port_and_does_not_wait_for_a_slow_answer(token):
    emulator = GraphEmulator(expected_token=token, latency_ms=5000).start()
    port = urlsplit(emulator.url).port
    threading.Thread(
        target=lambda: _quietly_get(emulator.url, f"/v26.0/me?access_token={token}"), daemon=True
    ).start()
    while not emulator.requests:  # recorded before the latency sleep
        time.sleep(0.01)
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with GraphEmulator(port=port) as again:  # the port is free for the next one
        assert again.url == f"http://127.0.0.1:{port}"
    emulator.stop()  # twice is fine
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.url


def _quietly_get(base: str, path: str) -> None:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    except OSError:
        pass  # the emulator stopped under it
    finally:
        connection.close()
