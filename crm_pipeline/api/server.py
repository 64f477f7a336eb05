"""Running the API under uvicorn (`crm-pipeline serve`)."""

from __future__ import annotations

import logging
import re

import uvicorn

_SECRET_QUERY = re.compile(r"(hub\.verify_token|access_token|appsecret_proof)=[^&\s]*", re.I)


class RedactQuerySecrets(logging.Filter):
    """Mask secret query parameters (the webhook verify token) in uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1=***", a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _SECRET_QUERY.sub(r"\1=***", record.msg)
        return True


def install_log_redaction() -> None:
    """Attach the redaction filter to uvicorn's access and error loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(RedactQuerySecrets())


def build_server(app, host: str = "127.0.0.1", port: int = 8000, **options) -> uvicorn.Server:
    """A uvicorn Server for `app` with secret-safe logging (tests run it in a thread)."""
    config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=False, server_header=False, **options
    )
    server = uvicorn.Server(config)
    install_log_redaction()
    return server


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Run the API in the foreground until interrupted."""
    from crm_pipeline.api.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    server = build_server(create_app(), host, port, log_level=log_level)
    # uvicorn configures its loggers in Config.__init__ (done above), so the filter stays.
    server.run()
