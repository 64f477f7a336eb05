"""Resources shared by every domain: the source-of-truth database and the local file stores.

Fields left unset fall back to the environment (`crm_pipeline.config`), read when a run or a
sensor tick uses the resource, not when the code location loads: loading definitions never
starts a database.
"""

from pathlib import Path

import dagster as dg
from sqlalchemy import Engine

from crm_pipeline.cache.stores import Store, open_store, store_from_settings
from crm_pipeline.config import load_settings, normalize_database_url, redact_url
from crm_pipeline.db.demo_mark import claim_for_demo
from crm_pipeline.db.engine import get_engine, resolve_database_url
from crm_pipeline.db.migrate import require_migrated
from crm_pipeline.db.privacy.identifiers import ErasedIdentifiers

_demo_checked: set[str] = set()  # databases known to be demo databases, in this process


class PostgresResource(dg.ConfigurableResource):
    """The source-of-truth PostgreSQL: `CRM_DATABASE_URL`, or the embedded server by default."""

    database_url: str | None = None

    def url(self) -> str:
        """The SQLAlchemy URL, starting the embedded server when no URL is configured."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return resolve_database_url(load_settings())

    def engine(self) -> Engine:
        """The pooled engine for this database, once the configuration is fit for it (the
        production rules; demo data only into a demo database) and its schema is current."""
        settings = load_settings()
        settings.require_production_ready("a Dagster run or sensor")
        url = self.url()
        require_migrated(url)
        engine = get_engine(url)
        if settings.uses_emulator and url not in _demo_checked:
            with engine.begin() as conn:
                claim_for_demo(conn)
            _demo_checked.add(url)
        return engine

    def erased(self) -> ErasedIdentifiers:
        """The erased people's identifiers (keyed hashes), read now: what syncs must drop."""
        with self.engine().connect() as conn:
            return ErasedIdentifiers.load(conn)

    def display_url(self) -> str:
        """The URL with any password masked, for metadata and logs."""
        return redact_url(self.url())


class StorageResource(dg.ConfigurableResource):
    """Raw Parquet (the folder `CRM_DATA_DIR`) and the JSON cache files (`CRM_CACHE_URL`: a
    folder or an S3 bucket prefix; else the folder `CRM_CACHE_DIR`).

    `cache_url` wins over `cache_dir`; both unset: the environment's.
    """

    data_dir: str | None = None
    cache_dir: str | None = None
    cache_url: str | None = None  # a folder or s3://bucket/prefix

    def data_path(self) -> Path:
        """Root of the raw landing zone."""
        return Path(self.data_dir) if self.data_dir else load_settings().data_dir

    def cache_path(self) -> Path:
        """The local cache folder (`cache_dir`, else `CRM_CACHE_DIR`); writers use
        `cache_store`, which is this folder unless an S3 location is configured."""
        return Path(self.cache_dir) if self.cache_dir else load_settings().cache_dir

    def cache_store(self) -> Store:
        """Where the JSON cache files are published (a local folder or an S3 bucket prefix)."""
        settings = load_settings()
        location = self.cache_url or self.cache_dir
        if location is None:
            return store_from_settings(settings)
        return open_store(location, endpoint_url=settings.cache.s3_endpoint_url)
