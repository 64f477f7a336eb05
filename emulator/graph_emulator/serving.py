"""Serving an ASGI app with uvicorn from a background thread, on a socket bound up front.

Binding in the caller's thread makes a taken port fail there, and gives the real port of
``port=0`` before the first request; uvicorn then speaks HTTP/1.1 with keep-alive, so a client's
connection pool reuses one connection for many calls.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

__all__ = ["BackgroundServer"]

_START_TIMEOUT_SECONDS = 10.0
# Longer than any pause between a client's calls in a sync, so a pooled connection is not
# closed under a request being sent on it.
_KEEP_ALIVE_SECONDS = 60
# A request still being answered at stop() (a long injected latency) is cut after this.
_GRACEFUL_SHUTDOWN_SECONDS = 1
_STOP_TIMEOUT_SECONDS = 5.0


class BackgroundServer:
    """One uvicorn server for ``app`` on ``host:port``, run by a daemon thread."""

    def __init__(self, app, host: str, port: int, *, name: str) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
        """Bind, start serving, wait until uvicorn accepts connections; the bound address."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            lifespan="off",
            # No access log: request lines carry access tokens. No logging setup either: this
            # runs inside other programs (tests, benchmarks), whose logging is theirs.
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=_KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"{self.name}: uvicorn did not start serving {host}:{port}")
            thread.join(0.005)
        self.address = (host, port)
        return self.address

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call more than once."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.address = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_SECONDS)
