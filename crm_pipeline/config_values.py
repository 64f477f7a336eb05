"""The building blocks of the settings: constants, errors, the `Secret` type, and the parsers
and validators of single values (database URLs, ad account ids). Nothing here reads the
environment; `crm_pipeline.config` does (docs/architecture.md, "One place for each fact").
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from crm_pipeline.facebook.ids import AD_ACCOUNT_NODE, account_node

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
EMULATOR = "emulator"  # FB_GRAPH_URL=emulator: the bundled Graph API emulator, on purpose
NUMERIC_ID = re.compile(r"^\d+$")

# Development defaults: `crm-pipeline dev` and the demo use them against the emulator;
# production refuses every one of them.
DEV_APP_SECRET = "crm-dev-app-secret"
DEV_VERIFY_TOKEN = "crm-dev-verify-token"
DEFAULT_MASK_KEY = "crm-pipeline/clone-db/default-mask-key/v1"  # public: reproducible clones


class ConfigError(ValueError):
    """Raised when an environment variable is missing or malformed; the message is safe to log."""


class Secret(SecretStr):
    """A string that does not print itself: `repr`, `str` and f-strings show a mask."""

    def reveal(self) -> str:
        """The real value, for the one call that needs it (an HTTP session, an HMAC)."""
        return self.get_secret_value()

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


def env_field(name: str, description: str, default: Any = None, **kwargs: Any) -> Any:
    """A field read from the environment variable `name` (the README shows `description`)."""
    extra = {"env": name}
    shown = kwargs.pop("shown_default", None)
    if shown is not None:
        extra["shown_default"] = shown
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


def blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def normalize_database_url(
    raw: str, variable: str = "CRM_DATABASE_URL", *, driver: str = "psycopg"
) -> str:
    """Return a SQLAlchemy URL for `driver`, or raise ConfigError without echoing the password.

    We use psycopg (3); dagster-postgres needs psycopg2 (its `NOTIFY run_events, %s` relies on
    client-side parameter binding, which psycopg 3 does not do).
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"{variable} is not a valid database URL "
            "(expected postgresql://user[:password]@host[:port]/dbname)"
        ) from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{variable} must point at PostgreSQL (postgresql://...), "
            f"got the '{url.get_backend_name()}' dialect"
        )
    # The bare scheme means a different driver on each SQLAlchemy version: always name it.
    url = url.set(drivername=f"postgresql+{driver}")
    if not url.database:
        raise ConfigError(f"{variable} must name a database (postgresql://host/dbname)")
    return url.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and metadata."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


# S3 bucket names: 3-63 characters of lower-case letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_cache_url(value: str) -> tuple[str, str] | None:
    """`CRM_CACHE_URL`: (bucket, prefix) for `s3://bucket/prefix`, None for a folder path.

    Raises ConfigError for another scheme or a malformed bucket (the value is not secret: it
    names a bucket, and credentials come from elsewhere).
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        return None
    if scheme.lower() != "s3":
        raise ConfigError(
            f"CRM_CACHE_URL must be a folder path or s3://bucket/prefix, not a {scheme}:// URL"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or "?" in rest or "#" in rest:
        raise ConfigError(
            "CRM_CACHE_URL must look like s3://bucket/prefix (a bucket name of 3-63 lower-case "
            "letters, digits, dots and hyphens; no credentials, query or fragment)"
        )
    return bucket, prefix.strip("/")


def parse_account_ids(raw: str | None) -> tuple[str, ...]:
    """Parse `FB_AD_ACCOUNT_IDS`: comma-separated `act_<digits>` (bare digits get the prefix)."""
    if not raw:
        return ()
    ids: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if NUMERIC_ID.match(item):
            item = account_node(item)
        if not AD_ACCOUNT_NODE.match(item):
            raise ConfigError(
                f"FB_AD_ACCOUNT_IDS has an entry that is not an ad account id: {item!r} "
                "(expected act_<digits>, comma-separated)"
            )
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def parse_page_ids(raw: str | None) -> tuple[str, ...]:
    """Parse `FB_PAGE_IDS`: comma-separated numeric page ids (duplicates dropped, order kept)."""
    ids: list[str] = []
    for item in (part.strip() for part in (raw or "").split(",")):
        if not item:
            continue
        if not NUMERIC_ID.match(item):
            raise ConfigError(
                f"FB_PAGE_IDS has an entry that is not a numeric page id: {item!r} "
                "(expected digits, comma-separated)"
            )
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value
