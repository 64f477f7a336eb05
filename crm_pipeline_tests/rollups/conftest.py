"""Fixtures for the rollup tests: the summary tests' data (demo CRM + marketing rows)."""

import pytest
from sqlalchemy import text

from crm_pipeline.demo import seed_demo_crm
from crm_pipeline_tests.analytics.summary_data import seed_marketing


@pytest.fixture
def seeded(clean_db):
    """The session database with the summary tests' customers, orders, leads, ads, insights."""
    seed_demo_crm(clean_db)
    seed_marketing(clean_db)
    return clean_db


@pytest.fixture
def people(seeded) -> list[int]:
    """The first five customers' ids (the summary data's A..E: A, D have orders and leads)."""
    with seeded.connect() as conn:
        return conn.execute(text("SELECT id FROM customers ORDER BY id LIMIT 5")).scalars().all()
