"""Issue 17's done-when: a person who came in through a lead, with messages and orders, erased
by email from every table, cache file and raw Parquet file; a later sync does not bring them
back although the emulator still serves their lead and conversation."""

import datetime as dt

import dagster as dg
import orjson
import pytest
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import cli
from crm_pipeline.cache.rebuild import rebuild_all_customers, rebuild_file, rebuild_index
from crm_pipeline.cache.registry import FILES
from crm_pipeline.db.clone import clone_database
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import sync
from crm_pipeline_tests.privacy.person_traces import Needles, file_traces, table_traces

pytestmark = pytest.mark.db

PERSON = Needles(
    email="x@example.net", phone="+44 20 7946 0958", name="Xenia Erasmus", psid="9188776655"
)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SNAPSHOT = "20261201T000000000000Z"  # a local_db_snapshot folder


def _emulator_with_person() -> EmulatorData:
    data = EmulatorData()
    form = data.lead_forms()[0]["id"]
    data.add_lead(
        form,
        created_time=NOW - dt.timedelta(hours=3),
        email="X@Example.net",  # Meta keeps what the person typed
        full_name=PERSON.name,
        phone=PERSON.phone,
    )
    for minutes, words in ((60, f"Hi, I'm {PERSON.name}"), (30, f"mail me: {PERSON.email}")):
        data.add_message(
            None, psid=PERSON.psid, text=words, created_time=NOW - dt.timedelta(minutes=minutes)
        )
    return data


def _refresh_cache(engine, cache_dir) -> None:
    with read_snapshot(engine) as conn:
        rebuild_all_customers(conn, cache_dir)
        rebuild_index(conn, cache_dir, None)
    for file in FILES:
        if not file.targeted:
            rebuild_file(engine, cache_dir, file)


def _traces(engine, dirs) -> list[str]:
    return (
        table_traces(engine, PERSON)
        + file_traces(dirs["cache"], PERSON)
        + file_traces(dirs["data"], PERSON)
    )


def _erase(monkeypatch, database_url, dirs, *args) -> int:
    monkeypatch.setenv("CRM_DATABASE_URL", database_url)
    monkeypatch.setenv("CRM_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("CRM_CACHE_DIR", str(dirs["cache"]))
    return cli.main(["privacy", "erase", *args])


def _person_everywhere(engine, database_url, server, dirs) -> int:
    """Sync the person in from Meta, give them an order, build the cache and a snapshot; their
    customer id."""
    with engine.begin() as conn:  # the CRM knew them: their lead and thread link here
        conn.execute(
            text("INSERT INTO customers (name, email, fb_psid) VALUES (:n, :e, :p)"),
            {"n": PERSON.name, "e": PERSON.email, "p": PERSON.psid},
        )
    sync(database_url, server, dirs, instance=dg.DagsterInstance.ephemeral())
    with engine.begin() as conn:
        customer = conn.execute(
            text("SELECT customer_id FROM leads WHERE lower(email) = :e"), {"e": PERSON.email}
        ).scalar_one()
        conn.execute(
            text("INSERT INTO orders (customer_id, amount) VALUES (:id, 42.50)"), {"id": customer}
        )
    _refresh_cache(engine, dirs["cache"])
    clone_database(database_url, dirs["data"] / "snapshots" / SNAPSHOT, progress=None)
    return customer


def test_an_erased_person_is_gone_everywhere_and_a_later_sync_does_not_bring_them_back(
    clean_db, database_url, dirs, monkeypatch, capsys
):
    with GraphEmulator(_emulator_with_person()) as server:
        customer = _person_everywhere(clean_db, database_url, server, dirs)
        snapshot = dirs["data"] / "snapshots" / SNAPSHOT
        before = _traces(clean_db, dirs)
        # Everywhere before: the test would pass vacuously if the person never got in.
        for place in ("leads", "messages", "customers", "index/", "raw/leads/", "snapshots/"):
            assert any(place in t for t in before), (place, before)

        assert _erase(monkeypatch, database_url, dirs, "--email", PERSON.email) == 0
        out = capsys.readouterr().out
        assert PERSON.email not in out
        assert _traces(clean_db, dirs) == [], _traces(clean_db, dirs)
        assert orjson.loads((snapshot / "manifest.json").read_bytes())["rewritten_by_erasures_at"]

        with clean_db.connect() as conn:
            erasure = conn.execute(text("SELECT selector, actor, counts FROM erasures")).one()
            remembered = conn.execute(text("SELECT kind FROM erased_identifiers")).scalars()
            kinds = set(remembered)
            orders = conn.execute(
                text("SELECT count(*) FROM orders WHERE customer_id = :id"), {"id": customer}
            ).scalar_one()
        assert erasure.selector == "email" and erasure.actor.startswith("cli:")
        assert erasure.counts["leads"] == 1 and erasure.counts["messages"] == 2
        assert erasure.counts["customers_anonymised"] == 1 and orders == 1  # kept, for accounts
        assert erasure.counts["raw_rows_removed"] >= 3
        assert {"email", "phone", "psid", "lead", "conversation"} <= kinds

        # Meta still serves the lead and the thread; read everything again from the start.
        with clean_db.begin() as conn:
            conn.execute(text("DELETE FROM sync_state WHERE stream IN ('leads', 'conversations')"))
        sync(database_url, server, dirs, instance=dg.DagsterInstance.ephemeral())
        _refresh_cache(clean_db, dirs["cache"])
    assert _traces(clean_db, dirs) == []
    with clean_db.connect() as conn:  # the sync did run: everyone else's leads came back
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() > 5
        assert conn.execute(text("SELECT count(*) FROM conversations")).scalar_one() > 2
