"""`clone-db` of a database the Facebook sync filled: Meta's unconstrained `numeric` values
(frequency) and tables whose physical column order differs from the schema's (a migration added
a column) clone exactly and verify."""

import dagster as dg
import pyarrow.parquet as pq
import pytest
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline.db.clone import clone_database
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import sync

pytestmark = pytest.mark.db


def test_a_synced_database_clones_to_parquet_exactly(clean_db, database_url, dirs):
    with GraphEmulator(EmulatorData()) as server:
        sync(database_url, server, dirs, instance=dg.DagsterInstance.ephemeral())
    with clean_db.connect() as conn:
        frequencies = conn.execute(
            text("SELECT frequency::text FROM ad_insights_daily WHERE frequency IS NOT NULL")
        ).scalars()
        frequencies = sorted(frequencies)
        physical = conn.execute(
            text(
                "SELECT string_agg(column_name, ',' ORDER BY ordinal_position)"
                " FROM information_schema.columns WHERE table_name = 'campaigns'"
            )
        ).scalar_one()
    # What made the clone fail: more decimals than any fixed scale, and a reordered table.
    assert any(len(f.split(".")[-1]) > 4 for f in frequencies)
    assert physical != "id,account_id,name,status,objective,created_time,updated_time"

    result = clone_database(database_url, dirs["data"] / "snapshot", progress=None)
    assert all(t.ok for t in result.tables)
    cloned = pq.read_table(dirs["data"] / "snapshot" / "ad_insights_daily.parquet")
    assert sorted(f for f in cloned.column("frequency").to_pylist() if f is not None) == frequencies
