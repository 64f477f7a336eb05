"""B5's API servers, each run in a child process on a free loopback port.

    python benchmarks/api_servers.py ours|reference|granian PORT

  ours       the real app (`create_app()`) under uvicorn as `crm-pipeline serve` builds it,
             plus BARE_ROUTE: the same bytes from a dict, what the stack itself costs.
  reference  the same app with `GET /api/customers/{id}` built from PostgreSQL per request.
  granian    ours under granian instead of uvicorn (same app, other HTTP stack).

`Server` starts one of them from the benchmark process (benchmarks/api_reads.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import harness  # noqa: F401  first: puts the repo root on sys.path
import psutil
from fastapi import Path as PathParam
from fastapi import Request
from fastapi.responses import Response

BARE_ROUTE = "/bench/bare/customers/"  # the same bytes from a dict: the stack's own limit


def reference_app():
    """The real app with `GET /api/customers/{id}` answered from PostgreSQL on every request."""
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.problems import Problem
    from crm_pipeline.cache import customer_files
    from crm_pipeline.cache.registry import CUSTOMER_SCHEMA_VERSION
    from crm_pipeline.cachefile import dumps, envelope
    from crm_pipeline.db.changelog import reflected_watermark

    app = create_app()

    def customer_profile(
        request: Request, customer_id: int = PathParam(ge=1, le=2**63 - 1)
    ) -> Response:
        with request.app.state.db.snapshot() as conn:
            payload = customer_files.build_profiles(conn, [customer_id]).get(customer_id)
            watermark = reflected_watermark(conn)
        if payload is None:
            raise Problem(404, "Not found", "No customer with that id.")
        document = envelope(payload, watermark=watermark, schema_version=CUSTOMER_SCHEMA_VERSION)
        return Response(dumps(document), media_type="application/json")

    app.router.add_api_route("/api/customers/{customer_id}", customer_profile, methods=["GET"])
    app.router.routes.insert(0, app.router.routes.pop())  # matched before the cached route
    return app


def with_bare_route(app):
    """`app` plus BARE_ROUTE: the customer's file bytes from a dict in memory (read once), with
    the same key check, middleware and response class as the cached route. What the stack
    itself costs per request: our hit path can approach it, not pass it."""
    from fastapi import Security

    from crm_pipeline.api.auth import authenticate
    from crm_pipeline.config import load_settings

    folder = load_settings().cache_dir / "customers"
    bodies: dict[int, bytes] = {}

    def bare(customer_id: int = PathParam(ge=1, le=2**63 - 1)) -> Response:
        body = bodies.get(customer_id)
        if body is None:
            body = bodies[customer_id] = (folder / f"{customer_id}.json").read_bytes()
        return Response(body, media_type="application/json", headers={"X-Cache": "BARE"})

    app.router.add_api_route(
        BARE_ROUTE + "{customer_id}",
        bare,
        methods=["GET"],
        dependencies=[Security(authenticate, scopes=["customers:read"])],
    )
    return app


def granian_app():
    """The `ours` app for granian (a factory: granian imports it in its worker)."""
    from crm_pipeline.api.app import create_app

    return with_bare_route(create_app())


def serve(which: str, port: int) -> int:
    """Run the `which` server (ours, reference or granian) on 127.0.0.1:`port` until stopped."""
    from crm_pipeline.api.app import create_app
    from crm_pipeline.api.server import build_server

    if which == "granian":
        from granian import Granian

        Granian(
            "api_servers:granian_app",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface="asgi",
            workers=1,
            loop="uvloop",
            http="1",
            log_enabled=False,
        ).serve()
        return 0
    app = with_bare_route(create_app()) if which == "ours" else reference_app()
    build_server(app, "127.0.0.1", port, log_level="warning").run()
    return 0


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One API server process on a free loopback port."""

    def __init__(self, which: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, which, str(self.port)], env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the {which} server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the {which} server did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        """Terminate the server and wait for it to exit."""
        self.proc.terminate()
        self.proc.wait(30)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], int(sys.argv[2])))
