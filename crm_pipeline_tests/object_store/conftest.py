"""A local S3-compatible server for the cache-store tests: moto in server mode on 127.0.0.1.

moto (5.x) evaluates `If-Match` / `If-None-Match` on PutObject, but it checks the condition
and stores the object in two steps without a lock, so two racing PUTs can both pass the check.
S3 evaluates a conditional write atomically with the write; the server below gives moto that
property by handling one request at a time (a lock around the WSGI app), so the race tests test
our protocol and not moto's missing lock. The product itself takes no lock: it relies on the
store's conditional writes.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator

import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from crm_pipeline.cache.stores.s3 import S3Store, new_client

ACCESS_KEY = "AKIAMOTOTESTKEY00001"
SECRET_KEY = "moto-test-secret-3f9a2c-never-shown"


class _Handler(MotoRequestHandler):
    # One connection per request: once the server is stopped it is unreachable at once (a kept
    # alive connection would otherwise still be answered by its handler thread).
    protocol_version = "HTTP/1.0"

    def log_request(self, *args, **kwargs) -> None:  # quiet
        pass


def _one_at_a_time(app):
    lock = threading.Lock()

    def wsgi(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    return wsgi


class S3Server:
    """moto's S3 on an ephemeral loopback port; `stop()` makes it unreachable."""

    def __init__(self) -> None:
        app = _one_at_a_time(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)


@functools.cache
def client_for(url: str):
    """One boto3 client per server for the tests' own stores (a client takes ~0.3 s to build;
    it is thread-safe). Built under `aws_test_credentials`, whose values never change."""
    return new_client(url)


@pytest.fixture(autouse=True)
def aws_test_credentials(monkeypatch, tmp_path):
    """Fake credentials for moto; never a developer's profile, never an instance role."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session (each test uses a bucket of its own)."""
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, aws_test_credentials) -> str:
    """A new, empty bucket on the session server."""
    name = f"crm-cache-{uuid.uuid4().hex[:12]}"
    client_for(s3_server.url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_server, bucket) -> S3Store:
    """A store under `s3://<bucket>/cache` on the session server."""
    return S3Store(bucket, "cache", client=client_for(s3_server.url))
