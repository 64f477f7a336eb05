"""Settings from environment variables: the one place configuration is read and validated.

Every variable name here is fixed by DESIGN.md. Errors name the variable and what is wrong
with it, never its value when the value may be a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
_ACCOUNT_ID = re.compile(r"^act_\d+$")
_NUMERIC_ID = re.compile(r"^\d+$")
_API_VERSION = re.compile(r"^v\d+\.\d+$")


class ConfigError(ValueError):
    """Raised when an environment variable is missing or malformed; the message is safe to log."""


class Secret:
    """A string that does not print itself: `repr`, `str` and f-strings show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one call that needs it (an HTTP session, an HMAC)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Build it with `load_settings()`."""

    database_url: str | None = None
    cache_dir: Path = Path("cache")
    data_dir: Path = Path(".crm")
    graph_url: str | None = None
    api_version: str | None = None
    access_token: Secret | None = field(default=None, repr=False)
    app_secret: Secret | None = field(default=None, repr=False)
    app_id: str | None = None
    ad_account_ids: tuple[str, ...] = ()
    page_id: str | None = None
    webhook_verify_token: Secret | None = field(default=None, repr=False)
    dagster_pg_url: str | None = None
    api_allowed_hosts: tuple[str, ...] = ()  # empty: loopback names when bound to loopback

    @property
    def uses_emulator(self) -> bool:
        """True when no Graph URL and no token are set: the bundled emulator stands in."""
        return self.graph_url is None and self.access_token is None

    @property
    def effective_graph_url(self) -> str | None:
        """The Graph URL to call, or None when the caller must start the emulator."""
        if self.graph_url:
            return self.graph_url
        return None if self.uses_emulator else DEFAULT_GRAPH_URL

    @property
    def pg_data_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps its data when `CRM_DATABASE_URL` is unset."""
        return self.data_dir / "pg"


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


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


def _http_url(raw: str, variable: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{variable} must be an http(s) URL such as https://graph.facebook.com")
    if parts.query or parts.fragment:
        raise ConfigError(f"{variable} must be a base URL without query string or fragment")
    return raw.rstrip("/")


def parse_account_ids(raw: str | None) -> tuple[str, ...]:
    """Parse `FB_AD_ACCOUNT_IDS`: comma-separated `act_<digits>` (bare digits get the prefix)."""
    if not raw:
        return ()
    ids: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if _NUMERIC_ID.match(item):
            item = f"act_{item}"
        if not _ACCOUNT_ID.match(item):
            raise ConfigError(
                f"FB_AD_ACCOUNT_IDS has an entry that is not an ad account id: {item!r} "
                "(expected act_<digits>, comma-separated)"
            )
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    get = lambda name: _blank_to_none(env.get(name))  # noqa: E731

    database_url = get("CRM_DATABASE_URL")
    if database_url is not None:
        database_url = normalize_database_url(database_url)

    dagster_pg_url = get("DAGSTER_PG_URL")
    if dagster_pg_url is not None:
        normalize_database_url(dagster_pg_url, "DAGSTER_PG_URL")

    graph_url = get("FB_GRAPH_URL")
    if graph_url is not None:
        graph_url = _http_url(graph_url, "FB_GRAPH_URL")

    api_version = get("FB_API_VERSION")
    if api_version is not None and not _API_VERSION.match(api_version):
        raise ConfigError(f"FB_API_VERSION must look like v26.0, got {api_version!r}")

    app_id = get("FB_APP_ID")
    if app_id is not None and not _NUMERIC_ID.match(app_id):
        raise ConfigError("FB_APP_ID must be the numeric app id")

    page_id = get("FB_PAGE_ID")
    if page_id is not None and not _NUMERIC_ID.match(page_id):
        raise ConfigError("FB_PAGE_ID must be the numeric page id")

    secret = lambda name: Secret(v) if (v := get(name)) else None  # noqa: E731
    access_token = secret("FB_ACCESS_TOKEN")
    if access_token is not None and any(c.isspace() for c in access_token.reveal()):
        raise ConfigError("FB_ACCESS_TOKEN contains whitespace; check how it was exported")

    allowed_hosts = tuple(
        h.strip().lower() for h in (get("CRM_API_ALLOWED_HOSTS") or "").split(",") if h.strip()
    )
    bad_hosts = [h for h in allowed_hosts if any(c in h for c in "/ @")]
    if bad_hosts:
        raise ConfigError(
            "CRM_API_ALLOWED_HOSTS takes host names (e.g. crm.example.com,*.example.com), "
            f"not URLs: {', '.join(bad_hosts)}"
        )

    return Settings(
        database_url=database_url,
        cache_dir=Path(get("CRM_CACHE_DIR") or "cache"),
        data_dir=Path(get("CRM_DATA_DIR") or ".crm"),
        graph_url=graph_url,
        api_version=api_version,
        access_token=access_token,
        app_secret=secret("FB_APP_SECRET"),
        app_id=app_id,
        ad_account_ids=parse_account_ids(get("FB_AD_ACCOUNT_IDS")),
        page_id=page_id,
        webhook_verify_token=secret("FB_WEBHOOK_VERIFY_TOKEN"),
        dagster_pg_url=dagster_pg_url,
        api_allowed_hosts=allowed_hosts,
    )
