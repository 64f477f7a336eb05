"""The rules of an erasure, one at a time: what is deleted or kept, what is remembered, what a
dry run and an unknown person do, the webhook inbox, and raw files written meanwhile."""

import datetime as dt

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import cli
from crm_pipeline.db.privacy.identifiers import ErasedIdentifiers, digest, erasure_key
from crm_pipeline.defs.crm.inbox import process_inbox
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.erasure import erase_person
from crm_pipeline.lake import scrub

pytestmark = pytest.mark.db


def _erase(engine, dirs, selector, value, **options):
    return erase_person(
        engine,
        selector,
        value,
        actor="test",
        data_dir=dirs["data"],
        cache_dir=dirs["cache"],
        **options,
    )


def _count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def _seed(engine) -> int:
    with engine.begin() as conn:
        cid = conn.execute(
            text(
                "INSERT INTO customers (name, email, fb_psid) VALUES"
                " ('Ana', 'ana@example.org', '5550001') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO leads (id, email, phone, customer_id) VALUES"
                " ('L1', 'ANA@example.org', '+1 415 555 0100', NULL),"
                " ('L2', 'other@example.org', '+1 212 555 0199', NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, psid) VALUES ('t_1', 'P', '5550001'),"
                " ('t_2', 'P', '5550002');"
                "INSERT INTO messages (id, conversation_id, from_id, text) VALUES"
                " ('m1', 't_1', '5550001', 'hello'), ('m2', 't_1', 'P', 'hi Ana'),"
                " ('m3', 't_2', '5550002', 'someone else')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload) VALUES"
                " ('leadgen', 'L1', '{\"leadgen_id\": \"L1\"}'),"
                ' (\'messages\', \'m9\', \'{"sender": {"id": "5550001"}, "text": "x"}\'),'
                " ('leadgen', 'L2', '{\"leadgen_id\": \"L2\"}')"
            )
        )
    return cid


def test_every_row_of_the_person_goes_and_no_one_elses(clean_db, dirs):
    _seed(clean_db)
    dry = _erase(clean_db, dirs, "email", "ana@EXAMPLE.org ", dry_run=True)
    assert _count(clean_db, "SELECT count(*) FROM leads") == 2  # the dry run changed nothing
    assert _count(clean_db, "SELECT count(*) FROM erasures") == 0
    done = _erase(clean_db, dirs, "email", "ana@example.org")
    expected = {
        "customers_deleted": 1,  # no orders: nothing to keep it for
        "customers_anonymised": 0,
        "leads": 1,  # the lead shares the email (case-insensitively); the PSID leads to t_1
        "conversations": 1,
        "messages": 2,  # both sides of the thread
        "inbox_events": 2,  # its leadgen event and a message event from its PSID
        "identifiers": 5,  # email, phone (from the lead), PSID, lead id, conversation id
    }
    assert done.rows == dry.rows == expected
    assert _count(clean_db, "SELECT count(*) FROM leads WHERE id = 'L2'") == 1
    assert _count(clean_db, "SELECT count(*) FROM messages WHERE id = 'm3'") == 1
    assert _count(clean_db, "SELECT count(*) FROM webhook_inbox") == 1
    with clean_db.connect() as conn:
        record = conn.execute(text("SELECT selector, actor, counts::text FROM erasures")).one()
        erased = ErasedIdentifiers.load(conn)
    assert record.selector == "email" and record.actor == "test"
    assert "ana@" not in record.counts and "5550001" not in record.counts
    key = erasure_key()
    assert digest(key, "phone", "(415) 555-0100 ") is not None
    assert erased.matches({"phone": "+1 (415) 555-0100"})  # the same digits, written otherwise
    assert erased.matches({"field_data": '[{"name": "email", "values": ["Ana@Example.org"]}]'})
    assert not erased.matches({"email": "other@example.org", "phone": "+1 212 555 0199"})


def test_a_customer_with_orders_is_kept_anonymised(clean_db, dirs):
    cid = _seed(clean_db)
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO orders (customer_id, amount) VALUES (:c, 10)"), {"c": cid})
    result = _erase(clean_db, dirs, "psid", "5550001")
    assert result.rows["customers_anonymised"] == 1 and result.rows["customers_deleted"] == 0
    with clean_db.connect() as conn:
        row = conn.execute(
            text("SELECT name, email, phone, fb_psid FROM customers WHERE id = :c"), {"c": cid}
        ).one()
        orders = conn.execute(
            text("SELECT count(*) FROM orders WHERE customer_id = :c"), {"c": cid}
        )
        assert tuple(row) == (None, None, None, None) and orders.scalar_one() == 1


def test_an_unknown_customer_id_erases_and_records_nothing(clean_db, dirs, monkeypatch, capsys):
    _seed(clean_db)
    monkeypatch.setenv("CRM_DATABASE_URL", clean_db.url.render_as_string(hide_password=False))
    monkeypatch.setenv("CRM_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("CRM_CACHE_DIR", str(dirs["cache"]))
    assert cli.main(["privacy", "erase", "--customer-id", "424242"]) == 1
    assert "no customer with that id" in capsys.readouterr().err
    assert _count(clean_db, "SELECT count(*) FROM erasures") == 0
    assert cli.main(["privacy", "erase", "--email", "not-an-email"]) == 1
    assert "not-an-email" not in capsys.readouterr().err  # the value is never echoed


def test_an_email_the_database_never_held_is_still_remembered(clean_db, dirs):
    result = _erase(clean_db, dirs, "email", "future@example.org")
    assert not result.found and result.erasure_id is not None
    assert result.rows["identifiers"] == 1
    with clean_db.connect() as conn:
        assert ErasedIdentifiers.load(conn).matches({"email": "Future@example.org"})


def test_a_webhook_lead_of_an_erased_person_is_dropped(clean_db, database_url, dirs):
    data = EmulatorData()
    form = data.lead_forms()[0]["id"]
    moment = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    erased_lead = data.add_lead(
        form, created_time=moment, email="gone@example.org", full_name="Gone", phone="+15550100"
    )
    kept_lead = data.add_lead(
        form, created_time=moment, email="kept@example.org", full_name="Kept", phone="+15550101"
    )
    _erase(clean_db, dirs, "email", "gone@example.org")  # before Meta's notification arrives
    with clean_db.begin() as conn:
        for lead in (erased_lead, kept_lead):
            conn.execute(
                text(
                    "INSERT INTO webhook_inbox (source, event_key, payload) VALUES"
                    " ('leadgen', :k, CAST(:p AS jsonb))"
                ),
                {"k": lead["id"], "p": orjson.dumps({"leadgen_id": lead["id"]}).decode()},
            )
    with GraphEmulator(data) as server:
        resource = GraphApiResource(graph_url=server.url, ad_account_ids="act_1001")
        with resource.session() as graph:
            outcome = process_inbox(clean_db, graph.client, batch_size=10)
    assert outcome["dropped_erased"] == 1 and outcome["inserted"] == 1
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT email FROM leads")).scalars().all() == ["kept@example.org"]
        assert conn.execute(text("SELECT event_key FROM webhook_inbox")).scalars().all() == [
            kept_lead["id"]
        ]


def test_a_file_landed_while_it_is_scrubbed_is_not_undone(dirs, tmp_path):
    path = dirs["data"] / "raw" / "leads" / "synced_at=20261201T000000.000000Z" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a", "erased"], "v": [1, 2]}), path)
    landed = pa.table({"id": ["a", "erased", "new"], "v": [1, 2, 3]})
    calls = []

    def matches(row) -> bool:
        if not calls:  # a landing replaces the file while the scrub reads it
            tmp = tmp_path / "landing.parquet"
            pq.write_table(landed, tmp)
            tmp.replace(path)
        calls.append(row["id"])
        return row["id"] == "erased"

    report = scrub.scrub_personal_files(dirs["data"], matches)
    assert pq.read_table(path).column("id").to_pylist() == ["a", "new"]
    assert report.rows_removed == 1 and report.files_rewritten == 1
