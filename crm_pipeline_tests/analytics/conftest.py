"""Fixtures for the summary.json tests: the seeded database and the asset's resources."""

import pytest

from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline_tests.analytics.summary_data import seed_marketing


@pytest.fixture
def seeded(clean_db):
    seed_demo_crm(clean_db)
    seed_marketing(clean_db)
    return clean_db


@pytest.fixture
def resources(database_url, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
    }
