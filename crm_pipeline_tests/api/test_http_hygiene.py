"""HTTP hygiene of the API under a real uvicorn, checked with raw sockets where clients misbehave:
readable 413s for bodies sent blind, timeouts for stalled heads and bodies, 503 above the
concurrency limit, one log record without personal data per unhandled error, imports at startup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from crm_pipeline.api.app import create_app
from crm_pipeline.api.server import build_server
from crm_pipeline_tests.api.conftest import api_settings

ROOT = Path(__file__).resolve().parents[2]
FIVE_MB = 5 * 1000 * 1000


@contextmanager
def live(app, **options) -> Iterator[int]:
    """`app` under uvicorn in a thread (options as for `build_server`); yields the port."""
    server = build_server(app, "127.0.0.1", 0, log_level="warning", lifespan="on", **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def _port(api) -> int:
    return int(api.url.rsplit(":", 1)[1])


def _connect(port: int, timeout: float = 15) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _post_head(api, extra: str) -> bytes:
    return (
        "POST /api/customers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {api.key}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def _chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


# --- 413 that the client can read ---------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("limit", [None, 2048], ids=["default-limit", "small-limit"])
def test_a_body_sent_blind_gets_a_readable_413(clean_db, database_url, start_api, framing, limit):
    """The client sends all 5 MB before reading anything, as most do: it must read the 413
    problem, not a connection reset (the server reads and discards the rest before closing)."""
    api = start_api(database_url, **({"max_body_bytes": limit} if limit else {}))
    body = b'{"name": "' + b"x" * FIVE_MB + b'"}'
    if framing == "chunked":
        request = _post_head(api, "Transfer-Encoding: chunked\r\n") + _chunked(body)
    else:
        request = _post_head(api, f"Content-Length: {len(body)}\r\n") + body
    with _connect(_port(api)) as sock:
        sock.sendall(request)
        status, headers, payload = _parse(_read_until_closed(sock))
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(payload)
    assert problem["status"] == 413
    assert problem["title"] == "Request body too large"
    with clean_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 0
    with api.client() as client:  # the server is fine afterwards
        assert client.get("/health").status_code == 200


# --- stalled clients ------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_stalled_request_head_is_cut_off(clean_db, database_url, dirs, http):
    app = create_app(api_settings(dirs["cache"]), database_url=database_url)
    with live(app, http=http, header_timeout=0.5) as port:
        # Half a head, then nothing: 408 problem, then closed.
        with _connect(port) as sock:
            start = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0")
            status, headers, payload = _parse(_read_until_closed(sock))
            assert 0.4 < time.monotonic() - start < 3
        assert status == 408
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(payload)["status"] == 408

        # Connected but silent: closed without an answer.
        with _connect(port) as sock:
            start = time.monotonic()
            assert _read_until_closed(sock) == b""
            assert 0.4 < time.monotonic() - start < 3

        # A kept-alive connection whose next head stalls is cut off the same way.
        with _connect(port) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b"}" not in first:
                first += sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            start = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
            status, _, _ = _parse(_read_until_closed(sock))
            assert status == 408
            assert time.monotonic() - start < 3

        # A client that keeps to the time is served normally.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            assert client.get("/health").status_code == 200


def test_a_stalled_request_body_gets_408(clean_db, database_url, start_api, monkeypatch):
    monkeypatch.setenv("CRM_API_BODY_TIMEOUT_SECONDS", "0.5")
    api = start_api(database_url)
    with _connect(_port(api)) as sock:
        sock.sendall(_post_head(api, "Content-Length: 100\r\n") + b'{"name": "A')
        start = time.monotonic()
        status, headers, payload = _parse(_read_until_closed(sock))
        assert 0.4 < time.monotonic() - start < 3
    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(payload)["title"] == "Request timeout"
    with clean_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 0


# --- concurrency limit ------------------------------------------------------------------------


def test_above_the_concurrency_limit_a_request_gets_503_at_once(
    clean_db, database_url, dirs, monkeypatch
):
    monkeypatch.setenv("CRM_API_LIMIT_CONCURRENCY", "4")
    app = create_app(api_settings(dirs["cache"]), database_url=database_url)
    release = threading.Event()
    inside = []

    async def hold() -> dict:
        inside.append(1)
        while not release.is_set():
            await asyncio.sleep(0.01)
        return {"held": True}

    app.add_api_route("/test/hold", hold, methods=["GET"])
    with live(app) as port:
        url = f"http://127.0.0.1:{port}"
        held: list[httpx.Response] = []

        def request() -> None:
            with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
                held.append(client.get("/test/hold"))

        # uvicorn counts this server's open connections, the new one included.
        threads = [threading.Thread(target=request) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(inside) < 3:
            assert time.monotonic() < deadline, "the held requests did not arrive"
            time.sleep(0.01)
        try:
            with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
                start = time.monotonic()
                refused = client.get("/health")
                assert refused.status_code == 503
                assert time.monotonic() - start < 2
        finally:
            release.set()
            for thread in threads:
                thread.join(10)
        assert [r.status_code for r in held] == [200, 200, 200]
        with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
            assert client.get("/health").status_code == 200


# --- unhandled errors -------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: dict[int, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records[id(record)] = record  # the same record may reach several loggers


def test_an_unhandled_error_is_logged_once_without_personal_data(api, caplog):
    email = "ada.lovelace@example.com"

    def lookup(address: str) -> None:
        raise KeyError(f"no row for {address}")

    async def boom() -> dict:
        customer_email = email  # as read from a row: personal data in a local and an argument
        try:
            lookup(customer_email)
        except KeyError as exc:
            raise RuntimeError(f"duplicate key: DETAIL: Key (email)=({customer_email})") from exc
        return {}

    api.app.add_api_route("/test/boom/{tag}", boom, methods=["GET"])
    capture = _Records()
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.asgi", "crm_pipeline", "crm_pipeline.api")
    loggers = [logging.getLogger(name) for name in names]
    caplog.set_level(logging.DEBUG)
    for logger in loggers:
        logger.addHandler(capture)
    try:
        with api.client() as client:
            response = client.get("/test/boom/x")
        time.sleep(0.3)  # anything the server logs after answering
    finally:
        for logger in loggers:
            logger.removeHandler(capture)

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Internal server error"
    assert email not in response.text

    records = list(capture.records.values()) + [
        r for r in caplog.records if id(r) not in capture.records
    ]
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage()[:200] for r in errors]
    text = logging.Formatter().format(errors[0])
    assert "RuntimeError" in text and "KeyError" in text
    assert "GET /test/boom/{tag}" in text
    assert "in boom" in text and "in lookup" in text  # the frames
    assert __file__ in text
    for record in records:
        assert email not in logging.Formatter().format(record)
        assert "ada.lovelace" not in repr(record.__dict__)


# --- startup ------------------------------------------------------------------------------------

_STARTUP_SCRIPT = """
import json, sys
from pathlib import Path
from crm_pipeline.api.app import create_app
from crm_pipeline.cache.summary import _validator
from crm_pipeline_tests.api.conftest import api_settings, run_live

cache = Path(sys.argv[2])
app = create_app(api_settings(cache), database_url=sys.argv[1], cache_dir=cache)
compiled_before = _validator.cache_info().currsize
server = run_live(app)
next(server)  # started: accepting connections, no request made
compiled_after = _validator.cache_info().currsize
orchestration = sorted(
    m for m in sys.modules if m == "dagster" or m.startswith("crm_pipeline.defs")
)
next(server, None)
print(json.dumps({"before": compiled_before, "after": compiled_after, "dagster": orchestration}))
"""


def test_api_is_free_of_dagster_and_compiles_the_schema_at_startup(clean_db, database_url, dirs):
    result = subprocess.run(
        [sys.executable, "-c", _STARTUP_SCRIPT, database_url, str(dirs["cache"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The API reads the cache registry, never the Dagster definitions.
    assert report["dagster"] == []
    # The summary's schema validator is compiled before the first request, not inside it.
    assert report["before"] == 0
    assert report["after"] == 1
