"""The groups of the settings model (`cache`, `graph`, `sensors`, `worker`, `api`,
`retention`): related settings kept together, each read from its own flat environment variable
by `crm_pipeline.config`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from crm_pipeline.config_values import (
    ConfigError,
    blank_to_none,
    comma_list,
    env_field,
    parse_cache_url,
)
from crm_pipeline.facebook.governor_settings import GovernorSettings


class SettingsGroup(BaseModel):
    """A group of settings: frozen, no unknown keys, blanks mean unset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: blank_to_none(v) for k, v in data.items() if blank_to_none(v) is not None}
        return data


class CacheStoreSettings(SettingsGroup):
    """Where the cache files live when not in the folder `CRM_CACHE_DIR`
    (`Settings.cache_location`)."""

    url: str | None = env_field(
        "CRM_CACHE_URL",
        "where cache files live: a folder path, or `s3://bucket/prefix` (AWS S3 or an "
        "S3-compatible store: API and run pods on different machines share it; credentials "
        "from the standard AWS chain: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, "
        "`AWS_PROFILE`, an IAM role; see docs/deployment.md)",
        shown_default="`CRM_CACHE_DIR`",
    )
    s3_endpoint_url: str | None = env_field(
        "CRM_CACHE_S3_ENDPOINT_URL",
        "endpoint of the S3-compatible store of `CRM_CACHE_URL=s3://...` (MinIO, Ceph, R2...)",
        shown_default="boto3's: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and parse_cache_url(value) is not None:
            return value.rstrip("/")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("CRM_CACHE_S3_ENDPOINT_URL must be an http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(
                "CRM_CACHE_S3_ENDPOINT_URL must be a bare endpoint: no credentials (they come "
                "from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), query or fragment"
            )
        return value.rstrip("/")


class GraphSettings(SettingsGroup):
    """The Graph API client: the rate-limit governor and what the sync asks for."""

    insights_start_date: dt.date = env_field(
        "CRM_INSIGHTS_START_DATE", "first day of the insights partitions", dt.date(2025, 1, 1)
    )
    attribution_lookback_days: int = env_field(
        "CRM_ATTRIBUTION_LOOKBACK_DAYS", "days the daily re-sync covers", 28, ge=1, le=365
    )
    insights_mode: Literal["sync", "async"] = env_field(
        "CRM_INSIGHTS_MODE",
        "`sync` (paged GETs) or `async` (report runs, for large accounts)",
        "sync",
    )
    custom_insights: Path | None = env_field(
        "CRM_CUSTOM_INSIGHTS",
        "YAML file declaring custom insight tables (level, fields, breakdowns, attribution "
        "windows), checked when the definitions load (`custom_insights.example.yaml`)",
        shown_default="none: no custom insights",
    )
    max_wait_seconds: float = env_field(
        "CRM_GRAPH_MAX_WAIT_SECONDS",
        "total time one run may wait on Meta's rate limits before it ends",
        900.0,
        ge=0,
        allow_inf_nan=False,
    )
    base_backoff_seconds: float = env_field(
        "CRM_GRAPH_BACKOFF_BASE_SECONDS",
        "base of the exponential backoff (and of the slow-down pause)",
        1.0,
        ge=0,
        allow_inf_nan=False,
    )
    max_retries: int = env_field(
        "CRM_GRAPH_MAX_RETRIES", "retries of one call on codes 1, 2 and 5xx", 8, ge=0
    )
    slow_down_at_pct: float = env_field(
        "CRM_GRAPH_SLOW_DOWN_AT_PCT",
        "usage % from which calls are spaced out",
        75.0,
        ge=0,
        allow_inf_nan=False,
    )
    calls_per_account: int = env_field(
        "CRM_GRAPH_CALLS_PER_ACCOUNT",
        "Graph API requests in flight at once per ad account (Meta rate-limits each account on "
        "its own, so more in parallel only reaches its limit sooner)",
        1,
        ge=1,
    )
    max_calls_in_flight: int = env_field(
        "CRM_GRAPH_MAX_CALLS_IN_FLIGHT",
        "Graph API requests in flight at once across all ad accounts of one process (Meta also "
        "rate-limits the app as a whole, and one process's CPU parses every response); a "
        "request waiting for a slot does not count toward `CRM_GRAPH_MAX_WAIT_SECONDS`",
        8,
        ge=1,
    )

    def governor_settings(self) -> GovernorSettings:
        """The rate-limit governor's settings (`CRM_GRAPH_*`), for `GraphClient`."""
        try:
            return GovernorSettings(
                max_wait_seconds=self.max_wait_seconds,
                base_backoff_seconds=self.base_backoff_seconds,
                max_retries=self.max_retries,
                slow_down_at_pct=self.slow_down_at_pct,
                calls_per_account=self.calls_per_account,
                max_calls_in_flight=self.max_calls_in_flight,
            )
        except ValueError as error:
            raise ConfigError(f"invalid Graph API governor settings: {error}") from None


class SensorSettings(SettingsGroup):
    """Sensor and check timing (read when the code location loads)."""

    change_interval_seconds: int = env_field(
        "CRM_CHANGE_SENSOR_INTERVAL", "seconds between change-log sensor ticks", 5, ge=1
    )
    inbox_interval_seconds: int = env_field(
        "CRM_INBOX_SENSOR_INTERVAL", "seconds between webhook-inbox sensor ticks", 5, ge=1
    )
    inbox_retry_seconds: int = env_field(
        "CRM_INBOX_RETRY_SECONDS",
        "how often inbox rows that failed enrichment are retried",
        60,
        ge=0,
    )
    max_targeted_customers: int = env_field(
        "CRM_SENSOR_MAX_TARGETED_CUSTOMERS",
        "changed customers per tick above which all customer files are rebuilt",
        2000,
        ge=1,
    )
    cache_lag_grace_seconds: int = env_field(
        "CRM_CACHE_LAG_GRACE_SECONDS",
        "how old an unreflected change may be before a cache file's `not_behind_change_log` "
        "check fails",
        300,
        ge=0,
    )


class WorkerSettings(SettingsGroup):
    """The cache worker (`crm-pipeline cache-worker`) and how the sensor defers to it."""

    name: str = env_field(
        "CRM_CACHE_WORKER_NAME",
        "the worker's name in `cache_worker_state`; replicas sharing it take turns (one active)",
        "cache-worker",
        min_length=1,
    )
    coalesce_seconds: float = env_field(
        "CRM_CACHE_WORKER_COALESCE_SECONDS",
        "at most one rebuild per this many seconds of each whole-table file (index, insights, "
        "summary); customer files are rebuilt at once",
        1.0,
        ge=0,
    )
    poll_seconds: float = env_field(
        "CRM_CACHE_WORKER_POLL_SECONDS",
        "the backstop: the change log is read this often even without a notification",
        5.0,
        gt=0,
    )
    heartbeat_stale_seconds: int = env_field(
        "CRM_CACHE_WORKER_STALE_SECONDS",
        "a worker heartbeat older than this is dead: the change-log sensor does the work itself",
        30,
        ge=1,
    )
    report_to_dagster: bool = env_field(
        "CRM_CACHE_WORKER_REPORT",
        "report each batch to the Dagster instance (DAGSTER_HOME) as runless materializations",
        True,
    )


class ApiSettings(SettingsGroup):
    """The API service (`crm-pipeline serve`)."""

    allowed_hosts: tuple[str, ...] = env_field(
        "CRM_API_ALLOWED_HOSTS",
        "`Host` names the API accepts, comma-separated (`*.example.com` for subdomains); "
        "required when it listens on a non-loopback address",
        (),
        shown_default="`localhost`, `127.0.0.1`, `[::1]` when bound to loopback",
    )
    cache_ttl_seconds: int = env_field(
        "CRM_API_CACHE_TTL_SECONDS",
        "age after which the API serves a cache file as STALE and refreshes it",
        300,
        ge=0,
    )
    max_body_bytes: int = env_field(
        "CRM_API_MAX_BODY_BYTES", "largest request body the API accepts", 1024 * 1024, ge=1
    )
    db_connect_timeout: int = env_field(
        "CRM_API_DB_CONNECT_TIMEOUT",
        "seconds the API waits for the database before answering 503 / STALE",
        3,
        ge=1,
    )
    header_timeout_seconds: float = env_field(
        "CRM_API_HEADER_TIMEOUT_SECONDS",
        "seconds a client has to send a request's headers",
        10.0,
        gt=0,
        allow_inf_nan=False,
    )
    body_timeout_seconds: float = env_field(
        "CRM_API_BODY_TIMEOUT_SECONDS",
        "seconds a request body may stall before the API answers 408",
        10.0,
        gt=0,
        allow_inf_nan=False,
    )
    limit_concurrency: int = env_field(
        "CRM_API_LIMIT_CONCURRENCY",
        "connections and requests in flight above which the API answers 503",
        200,
        ge=1,
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        hosts = tuple(h.lower() for h in comma_list(value))
        bad = [h for h in hosts if any(c in h for c in "/ @")]
        if bad:
            raise ValueError(
                "takes host names (e.g. crm.example.com,*.example.com), not URLs: " + ", ".join(bad)
            )
        return hosts


# The longest retention accepted (a century): past it, the cutoff would fall before year 1.
MAX_RETENTION_DAYS = 36_500


class RetentionSettings(SettingsGroup):
    """How long personal data is kept (the daily asset `personal_data_retention`)."""

    raw_days: int = env_field(
        "CRM_RAW_RETENTION_DAYS",
        "days raw Parquet landings (and quarantined rows) are kept under `CRM_DATA_DIR`; "
        "older ones are removed daily by `personal_data_retention`",
        30,
    )
    inbox_days: int = env_field(
        "CRM_INBOX_RETENTION_DAYS",
        "days processed and rejected webhook events are kept in `webhook_inbox` (pending ones "
        "are never removed); older ones are deleted daily by `personal_data_retention`",
        30,
    )

    @field_validator("raw_days", "inbox_days")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if not 1 <= value <= MAX_RETENTION_DAYS:
            variable = cls.model_fields[info.field_name].json_schema_extra["env"]
            raise ConfigError(
                f"{variable} must be a whole number of days from 1 to {MAX_RETENTION_DAYS} "
                f"(how long data is kept before it is deleted), got {value}"
            )
        return value
