"""Logging for our processes: plain text for people, one JSON object per line for log shippers.

`CRM_LOG_FORMAT=json` switches every `crm-pipeline` command (and the Dagster processes that
`crm-pipeline dev` starts, through `--log-format json`) to JSON lines; `CRM_LOG_LEVEL` sets the
level. Secret-looking query parameters, URL passwords and the customer list's search term and
cursor are masked in every record, whatever the format, so a stray URL in a message cannot leak
a token, a DB password or personal data.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import orjson

_SECRET_QUERY = re.compile(
    r"(hub\.verify_token|access_token|appsecret_proof|client_secret|password)=[^&\s\"']*", re.I
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+@", re.I)
# Query parameters that carry personal data: the customer list's search term, and its cursor
# (which holds the sort value of a customer, such as a name).
_PERSONAL_QUERY = re.compile(r"([?&](?:q|cursor))=[^&\s\"']*")
# LogRecord attributes that are not "extra" fields someone attached.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """Mask secret and personal query parameters and URL passwords in a log line."""
    masked = _PERSONAL_QUERY.sub(r"\1=***", _SECRET_QUERY.sub(r"\1=***", text))
    return _URL_PASSWORD.sub(r"\1***@", masked)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, extras, and exc when raised."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class RedactingTextFormatter(logging.Formatter):
    """The usual one-line text format, with secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(default_level: str = "WARNING") -> str:
    """Set up the root logger from `CRM_LOG_FORMAT` / `CRM_LOG_LEVEL`; return the format used."""
    from crm_pipeline.config import load_settings

    settings = load_settings()
    fmt = settings.log_format
    level = settings.log_level or default_level.strip().upper()
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return fmt
