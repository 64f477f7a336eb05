"""Settings: one pydantic-settings model, the only reader of the environment.

Every variable name is fixed (docs/architecture.md) and declared once here, with its meaning
and default; the README's configuration table is generated from this model
(`python -m crm_pipeline.config`) and a test keeps the two equal. The groups (`cache`,
`graph`, `sensors`, `worker`, `api`, `retention`, in `config_groups.py`) keep related settings
together; their variables keep their own flat names. Single values are parsed in
`config_values.py`.

Errors name the variable and what is wrong with it, never the value of a secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from crm_pipeline.config_groups import (
    ApiSettings,
    CacheStoreSettings,
    GraphSettings,
    RetentionSettings,
    SensorSettings,
    SettingsGroup,
    WorkerSettings,
)
from crm_pipeline.config_values import (
    DEFAULT_GRAPH_URL,
    DEFAULT_MASK_KEY,
    DEV_APP_SECRET,
    DEV_VERIFY_TOKEN,
    EMULATOR,
    NUMERIC_ID,
    ConfigError,
    Secret,
    blank_to_none,
    env_field,
    normalize_database_url,
    parse_account_ids,
    parse_page_ids,
    redact_url,
)
from crm_pipeline.facebook.ids import API_VERSION

# Re-exported: callers import every setting-related name from `crm_pipeline.config`.
__all__ = [
    "DEFAULT_GRAPH_URL",
    "DEFAULT_MASK_KEY",
    "DEV_APP_SECRET",
    "DEV_VERIFY_TOKEN",
    "EMULATOR",
    "ApiSettings",
    "CacheStoreSettings",
    "ConfigError",
    "GraphSettings",
    "RetentionSettings",
    "Secret",
    "SensorSettings",
    "Settings",
    "WorkerSettings",
    "ask_for_emulator_in_this_process",
    "configuration_table",
    "environment_variables",
    "load_settings",
    "normalize_database_url",
    "parse_account_ids",
    "parse_page_ids",
    "redact_url",
]


class Settings(BaseSettings):
    """Validated configuration. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=False)

    env: Literal["development", "production"] = env_field(
        "CRM_ENV",
        "`development` or `production` (production refuses demo defaults and missing settings)",
        "development",
    )
    database_url: str | None = env_field(
        "CRM_DATABASE_URL",
        "SQLAlchemy/libpq URL of the source-of-truth PostgreSQL",
        shown_default="embedded PostgreSQL under `CRM_DATA_DIR/pg` (not in production)",
    )
    cache_dir: Path = env_field("CRM_CACHE_DIR", "where JSON cache files go", Path("cache"))
    cache: CacheStoreSettings = Field(default_factory=CacheStoreSettings)
    data_dir: Path = env_field(
        "CRM_DATA_DIR",
        "raw Parquet landing zone, embedded DB, local Dagster instance",
        Path(".crm"),
    )
    graph_url: str | None = env_field(
        "FB_GRAPH_URL",
        "Graph API base URL; `emulator` for the bundled emulator (demo data, on purpose)",
        shown_default=f"`{DEFAULT_GRAPH_URL}`",
    )
    emulator_url: str | None = env_field(
        "CRM_EMULATOR_URL",
        "a running bundled emulator to use when `FB_GRAPH_URL=emulator` (set by the command "
        "that starts it: `demo`, `dev`, `crm-pipeline emulator -- COMMAND`)",
        shown_default="each command (or run) starts its own emulator process",
    )
    api_version: str | None = env_field(
        "FB_API_VERSION",
        "Graph API version of every call, e.g. `v26.0`; unset follows the installed "
        "facebook-business SDK (its newest), so upgrading the SDK moves to the newer version. "
        "Meta's deprecation warnings are logged; an expired version fails the run at once",
        shown_default="the SDK's own (`facebook_business.apiconfig`)",
    )
    access_token: Secret | None = env_field(
        "FB_ACCESS_TOKEN",
        "system-user access token (never logged, never Dagster config)",
        shown_default="none: syncs refuse to run",
        repr=False,
    )
    app_secret: Secret | None = env_field(
        "FB_APP_SECRET", "app secret: webhook signatures and `appsecret_proof`", repr=False
    )
    app_id: str | None = env_field("FB_APP_ID", "numeric app id")
    ad_account_ids: tuple[str, ...] = env_field(
        "FB_AD_ACCOUNT_IDS",
        "comma-separated `act_…` ids (bare digits get the prefix)",
        (),
        shown_default="none (the emulator's with `FB_GRAPH_URL=emulator`)",
    )
    page_id: str | None = env_field(
        "FB_PAGE_ID",
        "page for lead forms, conversations and webhooks",
        shown_default="none (the emulator's with `FB_GRAPH_URL=emulator`)",
    )
    page_ids: tuple[str, ...] = env_field(
        "FB_PAGE_IDS",
        "more pages, comma-separated numeric ids; with `FB_PAGE_ID` the union is synced and "
        "served (each page is read with its own Page access token)",
        (),
        shown_default="none",
    )
    webhook_verify_token: Secret | None = env_field(
        "FB_WEBHOOK_VERIFY_TOKEN", "token of Meta's webhook subscription handshake", repr=False
    )
    mask_key: Secret | None = env_field(
        "CRM_MASK_KEY",
        "key of the `clone-db --mask-pii` hashes and of erased people's identifiers (keep it:"
        " another key no longer recognises them; the built-in default is public)",
        shown_default="built-in (refused in production)",
        repr=False,
    )
    dagster_pg_url: str | None = env_field(
        "DAGSTER_PG_URL",
        "the Dagster instance's PostgreSQL, `postgresql+psycopg2://...` (read by "
        "the repo-root `dagster.yaml` and `deploy/k8s/dagster.yaml`)",
        shown_default="unset: local storage in `DAGSTER_HOME`",
    )
    dagster_home: Path | None = env_field(
        "DAGSTER_HOME",
        "Dagster's instance folder (its `dagster.yaml`)",
        shown_default="`CRM_DATA_DIR/dagster`, with a copy of the repo's `dagster.yaml`",
    )
    test_database_url: str | None = env_field(
        "CRM_TEST_DATABASE_URL",
        "run the DB tests against this server instead of the embedded one",
    )
    log_format: Literal["text", "json"] = env_field(
        "CRM_LOG_FORMAT", "`text` or `json` (one object per line)", "text"
    )
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] | None = env_field(
        "CRM_LOG_LEVEL", "log level of our commands", shown_default="`WARNING` (`serve`: `INFO`)"
    )
    graph: GraphSettings = Field(default_factory=GraphSettings)
    sensors: SensorSettings = Field(default_factory=SensorSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # Our variables have fixed flat names, groups included: one source reads them all.
        return (init_settings, _EnvironmentSource(settings_cls))

    # -- validation ---------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v for k, v in ((k, blank_to_none(v)) for k, v in data.items()) if v is not None
            }
        return data

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_database_url(value)

    @field_validator("dagster_pg_url")
    @classmethod
    def _dagster_url(cls, value: str | None) -> str | None:
        if value is not None:
            normalize_database_url(value, "DAGSTER_PG_URL")
            # Dagster reads the URL as it is (`postgres_url: {env: DAGSTER_PG_URL}`), and
            # dagster-postgres needs psycopg2: a bare postgresql:// means psycopg 3 to SQLAlchemy.
            if make_url(value).drivername != "postgresql+psycopg2":
                raise ConfigError(
                    "DAGSTER_PG_URL must name the psycopg2 driver that dagster-postgres needs: "
                    "postgresql+psycopg2://user:password@host:5432/dbname"
                )
        return value

    @field_validator("graph_url", "emulator_url")
    @classmethod
    def _graph_url(cls, value: str | None, info) -> str | None:
        if value is None or (info.field_name == "graph_url" and value.lower() == EMULATOR):
            return None if value is None else EMULATOR
        variable = "FB_GRAPH_URL" if info.field_name == "graph_url" else "CRM_EMULATOR_URL"
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{variable} must be an http(s) URL such as {DEFAULT_GRAPH_URL}"
                + (" (or `emulator`)" if variable == "FB_GRAPH_URL" else "")
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"{variable} must be a base URL without query string or fragment")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str | None) -> str | None:
        if value is not None and not API_VERSION.match(value):
            raise ConfigError(f"FB_API_VERSION must look like v26.0, got {value!r}")
        return value

    @field_validator("app_id", "page_id")
    @classmethod
    def _numeric(cls, value: str | None, info) -> str | None:
        if value is not None and not NUMERIC_ID.match(value):
            name = "FB_APP_ID" if info.field_name == "app_id" else "FB_PAGE_ID"
            raise ConfigError(f"{name} must be the numeric {info.field_name.split('_')[0]} id")
        return value

    @field_validator("access_token")
    @classmethod
    def _token(cls, value: Secret | None) -> Secret | None:
        if value is not None and any(c.isspace() for c in value.reveal()):
            raise ConfigError("FB_ACCESS_TOKEN contains whitespace; check how it was exported")
        return value

    @field_validator("ad_account_ids", mode="before")
    @classmethod
    def _accounts(cls, value: Any) -> Any:
        return parse_account_ids(value) if isinstance(value, str) else value

    @field_validator("page_ids", mode="before")
    @classmethod
    def _pages(cls, value: Any) -> Any:
        return parse_page_ids(value) if isinstance(value, str) else value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _case(cls, value: Any, info) -> Any:
        if not isinstance(value, str):
            return value
        return value.lower() if info.field_name == "log_format" else value.upper()

    # -- derived ------------------------------------------------------------------------------

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def cache_location(self) -> str:
        """Where cache files live: `CRM_CACHE_URL` (a folder or s3://...), else `CRM_CACHE_DIR`."""
        return self.cache.url or str(self.cache_dir)

    @property
    def uses_emulator(self) -> bool:
        """True only when asked for: `FB_GRAPH_URL=emulator`."""
        return self.graph_url == EMULATOR

    @property
    def effective_graph_url(self) -> str | None:
        """The Graph URL to call; None when the caller must start the emulator itself."""
        if self.uses_emulator:
            return self.emulator_url
        return self.graph_url or DEFAULT_GRAPH_URL

    @property
    def all_page_ids(self) -> tuple[str, ...]:
        """Every configured page: `FB_PAGE_ID` first, then `FB_PAGE_IDS` (the union, once each)."""
        return tuple(dict.fromkeys(((self.page_id,) if self.page_id else ()) + self.page_ids))

    @property
    def pg_data_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps its data when `CRM_DATABASE_URL` is unset."""
        return self.data_dir / "pg"

    def effective_mask_key(self) -> bytes:
        """The HMAC key of masked clones: `CRM_MASK_KEY`, else the public built-in one."""
        return (self.mask_key.reveal() if self.mask_key else DEFAULT_MASK_KEY).encode()

    def missing_graph_credentials(self) -> list[str]:
        """Variables a sync against Meta needs and lacks (none when the emulator is asked for)."""
        if self.uses_emulator:
            return []
        needed = {
            "FB_ACCESS_TOKEN": self.access_token,
            "FB_AD_ACCOUNT_IDS": self.ad_account_ids,
        }
        return [name for name, value in needed.items() if not value]

    def require_graph_credentials(self) -> None:
        """Raise ConfigError naming what is missing, before a sync writes anything."""
        missing = self.missing_graph_credentials()
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set: a sync needs Meta credentials "
                "(FB_ACCESS_TOKEN, FB_AD_ACCOUNT_IDS, FB_PAGE_ID). For demo data from the "
                "bundled emulator, run `crm-pipeline demo` or set FB_GRAPH_URL=emulator."
            )

    def production_problems(self) -> list[str]:
        """Everything that makes this configuration unfit for production (all at once)."""
        problems = []
        required = {
            "CRM_DATABASE_URL (no embedded database in production)": self.database_url,
            "FB_ACCESS_TOKEN": self.access_token,
            "FB_APP_SECRET": self.app_secret,
            "FB_WEBHOOK_VERIFY_TOKEN": self.webhook_verify_token,
            "FB_AD_ACCOUNT_IDS": self.ad_account_ids,
            "FB_PAGE_ID or FB_PAGE_IDS": self.all_page_ids,
            "CRM_MASK_KEY": self.mask_key,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        defaults = {
            "FB_APP_SECRET": (self.app_secret, DEV_APP_SECRET),
            "FB_WEBHOOK_VERIFY_TOKEN": (self.webhook_verify_token, DEV_VERIFY_TOKEN),
            "CRM_MASK_KEY": (self.mask_key, DEFAULT_MASK_KEY),
        }
        for name, (value, default) in defaults.items():
            if value is not None and value.reveal() == default:
                problems.append(f"{name} is the public development default")
        if self.uses_emulator or self.emulator_url:
            problems.append("FB_GRAPH_URL=emulator: the bundled emulator serves fake data")
        return problems

    def require_production_ready(self, what: str) -> None:
        """In production, raise ConfigError listing every problem; else do nothing."""
        if not self.production:
            return
        problems = self.production_problems()
        if problems:
            raise ConfigError(
                f"CRM_ENV=production: {what} refuses to start: " + "; ".join(problems)
            )

    def describe(self) -> list[tuple[str, str]]:
        """(variable, effective value) for every setting, secrets and URL passwords masked."""
        rows = []
        for variable, group, name, _info in _fields():
            value = getattr(getattr(self, group) if group else self, name)
            if isinstance(value, SecretStr):
                shown = "*** (set)"
            elif value is None or value == ():
                shown = "(unset)"
            elif "URL" in variable and isinstance(value, str) and "://" in value:
                shown = redact_url(value)
            elif isinstance(value, tuple):
                shown = ",".join(value)
            else:
                shown = str(value)
            rows.append((variable, shown))
        return rows


def _fields() -> Iterator[tuple[str, str | None, str, FieldInfo]]:
    """(variable, group, field name, field) for every environment variable of the model."""
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra or {}
        if "env" in extra:
            yield extra["env"], None, name, info
        elif isinstance(info.annotation, type) and issubclass(info.annotation, SettingsGroup):
            for sub, sub_info in info.annotation.model_fields.items():
                yield sub_info.json_schema_extra["env"], name, sub, sub_info


def environment_variables() -> tuple[str, ...]:
    """Every variable the model reads (tests clear exactly these)."""
    return tuple(variable for variable, *_ in _fields())


def _collect(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for variable, group, name, _info in _fields():
        if variable in env:
            target = data.setdefault(group, {}) if group else data
            target[name] = env[variable]
    return data


class _EnvironmentSource(PydanticBaseSettingsSource):
    """Reads our variables by their fixed names, group fields included."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ below does the whole model at once

    def __call__(self) -> dict[str, Any]:
        import os

        return _collect(os.environ)


def _variable_of(loc: tuple) -> str:
    fields = {(group, name): variable for variable, group, name, _ in _fields()}
    if len(loc) >= 2 and (loc[0], loc[1]) in fields:
        return fields[(loc[0], loc[1])]
    return fields.get((None, loc[0]), str(loc[0])) if loc else "configuration"


def ask_for_emulator_in_this_process(
    url: str, ad_account_ids: Sequence[str], page_id: str | None
) -> None:
    """Point this process (and what it starts) at the running emulator at `url`, token dropped.

    `ad_account_ids` and `page_id` are what to sync, learned from the emulator the way a client
    learns them from Meta (`crm_pipeline.facebook.local_emulator`). Call it before the
    definitions are imported: their account partitions come from the settings.
    """
    import os

    os.environ.pop("FB_ACCESS_TOKEN", None)  # a real token never goes to the emulator
    os.environ.pop("FB_PAGE_ID", None)
    os.environ.update(
        FB_GRAPH_URL=EMULATOR, CRM_EMULATOR_URL=url, FB_AD_ACCOUNT_IDS=",".join(ad_account_ids)
    )
    if page_id:
        os.environ["FB_PAGE_ID"] = page_id


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings from `env` (default: the process environment).

    Raises ConfigError naming each bad variable, never echoing its value.
    """
    try:
        if env is None:
            return Settings()
        return Settings.model_validate(_collect(env))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, ConfigError):
                problems.append(str(cause))
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{_variable_of(error['loc'])}: {message}")
        raise ConfigError("; ".join(dict.fromkeys(problems))) from None


def configuration_table() -> str:
    """The README's configuration table, generated from the model."""
    lines = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for variable, _group, _name, info in _fields():
        extra = info.json_schema_extra or {}
        if "shown_default" in extra:
            default = extra["shown_default"]
        elif info.default is None or info.default == () or info.default_factory is not None:
            default = "none"
        elif isinstance(info.default, Path):
            default = f"`{info.default}/`"
        else:
            default = f"`{info.default}`"
        lines.append(f"| `{variable}` | {info.description} | {default} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(configuration_table())
