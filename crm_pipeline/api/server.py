"""Running the API under uvicorn (`crm-pipeline serve`)."""

from __future__ import annotations

import logging

import uvicorn

from crm_pipeline.logs import configure_logging, redact


class RedactQuerySecrets(logging.Filter):
    """Mask secret query parameters (the webhook verify token) in uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
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

    # With JSON logs uvicorn keeps its hands off logging, so its records reach our formatter.
    json_logs = configure_logging(default_level=log_level) == "json"
    options = {"log_config": None} if json_logs else {}
    server = build_server(create_app(), host, port, log_level=log_level, **options)
    # uvicorn configures its loggers in Config.__init__ (done above), so the filter stays.
    server.run()
