"""`clone-db --mask-pii` leaves nothing personal in clear, in any column of any table.

The source holds a few people whose names, emails, phones and PSIDs also sit in free text
(messages, a custom lead-form answer) and in raw webhook payloads. After a masked clone, every
text and JSON cell of every table (PostgreSQL: columns found in information_schema; Parquet:
every cell of every file) is searched for each of those values, and the joins are checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from sqlalchemy import text

from crm_pipeline.db import schema
from crm_pipeline.db.clone import clone_database, mask_value
from crm_pipeline.db.clone.masking import PII_COLUMNS
from crm_pipeline.db.engine import libpq_url

KEY = "masking-test-key"
PAGE = "990011223344"
ZELDA = {
    "name": "Zelda Quixote",
    "email": "Zelda.Quixote@example.com",
    "phone": "+442071234567",
    "psid": "7712345678901234",
}
BART = {
    "name": "Bartholomew Ng",
    "email": "bart.ng@example.org",
    "phone": "+15551234987",
    "psid": "7798765432109876",
}
OPHELIA = {"name": "Ophelia Marchbanks", "email": "ophelia@leads.example", "phone": "+33612345678"}
PRIVATE_EMAIL = "zelda.private@mail.example"  # only ever in a custom question's answer
# Every value that must not survive the masking, and the distinctive parts of the names.
SECRETS = [
    *(v for person in (ZELDA, BART, OPHELIA) for v in person.values()),
    *(p["phone"].lstrip("+") for p in (ZELDA, BART, OPHELIA)),
    PRIVATE_EMAIL,
    "Quixote",
    "Bartholomew",
    "Marchbanks",
]
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


def _seed(conn) -> None:
    """Customers, orders, leads (with a custom answer), conversations, messages, inbox rows."""
    for p in (ZELDA, BART):
        conn.execute(
            text("INSERT INTO customers (name, email, phone, fb_psid) VALUES (:n, :e, :p, :s)"),
            {"n": p["name"], "e": p["email"], "p": p["phone"], "s": p["psid"]},
        )
    conn.execute(text("INSERT INTO customers (name, email) VALUES ('Nobody', NULL)"))
    conn.execute(
        text(
            "INSERT INTO orders (external_id, customer_id, amount)"
            " SELECT 'O-' || id, id, 12.50 FROM customers"
        )
    )
    _seed_leads(conn)
    _seed_messenger(conn)
    _seed_inbox(conn)


def _seed_leads(conn) -> None:
    zelda_answer = f"Call my assistant {ZELDA['name']} at {PRIVATE_EMAIL} or {ZELDA['phone']}"
    rows = [
        ("L1001", ZELDA, ZELDA["email"], zelda_answer),
        ("L1002", OPHELIA, None, f"I am {OPHELIA['name']}"),
    ]
    for lead_id, p, customer_email, answer in rows:
        field_data = [
            {"name": "email", "values": [p["email"]]},
            {"name": "full_name", "values": [p["name"]]},
            {"name": "phone_number", "values": [p["phone"]]},
            {"name": "who_should_we_contact?", "values": [answer]},
        ]
        if lead_id == "L1002":  # not Meta's shape: the general masking takes it
            field_data.append({"name": "referred_by", "values": BART["name"]})
        conn.execute(
            text(
                "INSERT INTO leads (id, form_id, email, phone, full_name, field_data, customer_id)"
                " VALUES (:id, 'F1', :e, :p, :n, CAST(:fd AS jsonb),"
                " (SELECT id FROM customers WHERE email = :ce))"
            ),
            {
                "id": lead_id,
                "e": p["email"],
                "p": p["phone"],
                "n": p["name"],
                "fd": json.dumps(field_data),
                "ce": customer_email,
            },
        )


def _seed_messenger(conn) -> None:
    for n, p in enumerate((ZELDA, BART), start=1):
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, customer_id, psid)"
                " VALUES (:id, :page, (SELECT id FROM customers WHERE fb_psid = :s), :s)"
            ),
            {"id": f"t_{n}", "page": PAGE, "s": p["psid"]},
        )
        said = f"I'm {p['name']}, mail me at {p['email'].upper()} or call {p['phone']}"
        reply = f"Thanks {p['name'].split()[0]}! We'll call {p['phone']} today."
        for mid, sender, body in ((f"m_{n}a", p["psid"], said), (f"m_{n}b", PAGE, reply)):
            conn.execute(
                text(
                    "INSERT INTO messages (id, conversation_id, from_id, text)"
                    " VALUES (:id, :c, :f, :t)"
                ),
                {"id": mid, "c": f"t_{n}", "f": sender, "t": body},
            )


def _seed_inbox(conn) -> None:
    leadgen = {
        "object": "page",
        "entry": [
            {
                "id": PAGE,
                "time": 1767225600,
                "changes": [
                    {
                        "field": "leadgen",
                        "value": {
                            "leadgen_id": "L1002",
                            "page_id": PAGE,
                            "form_id": "F1",
                            "created_time": 1767225600,
                            "field_data": [
                                {"name": "email", "values": [OPHELIA["email"]]},
                                {"name": "full_name", "values": [OPHELIA["name"]]},
                            ],
                        },
                    }
                ],
            }
        ],
    }
    rows = [("leadgen", "L1002", leadgen)]
    # Meta sometimes sends ids as JSON integers: Bart's PSID comes as a number.
    for mid, sender in (("m_1a", ZELDA["psid"]), ("m_2a", int(BART["psid"]))):
        said = f"hello, {ZELDA['name']} here: {ZELDA['email']}, {ZELDA['phone']}"
        message = {"mid": mid, "text": said, "is_echo": False}
        event = {"sender": {"id": sender}, "recipient": {"id": PAGE}, "message": message}
        entry = {"id": PAGE, "time": 1767225600123, "messaging": [event]}
        rows.append(("messages", mid, {"object": "page", "entry": [entry]}))
    for source, key, payload in rows:
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload)"
                " VALUES (:s, :k, CAST(:p AS jsonb))"
            ),
            {"s": source, "k": key, "p": json.dumps(payload)},
        )


@pytest.fixture
def seeded(clean_db, database_url, monkeypatch):
    monkeypatch.setenv("CRM_MASK_KEY", KEY)
    with clean_db.begin() as conn:
        _seed(conn)
    return database_url


def _leaks(cells) -> list[tuple[str, str, str]]:
    """(where, secret, cell) for every cell containing a secret, case-insensitively."""
    found = []
    for where, cell in cells:
        low = cell.lower()
        found += [(where, s, cell) for s in SECRETS if s.lower() in low]
    return found


def _postgres_cells(url: str):
    """Every non-NULL text/json cell of every table of the database, as text."""
    with psycopg.connect(libpq_url(url)) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " JOIN information_schema.tables USING (table_catalog, table_schema, table_name)"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            " AND data_type = ANY(%s)",
            [list(TEXT_TYPES)],
        ).fetchall()
        assert ("messages", "text") in columns and ("webhook_inbox", "payload") in columns
        for table, column in columns:
            query = sql.SQL("SELECT {c}::text FROM {t} WHERE {c} IS NOT NULL").format(
                c=sql.Identifier(column), t=sql.Identifier(table)
            )
            for (cell,) in conn.execute(query):
                yield f"{table}.{column}", cell


def _parquet_cells(folder: Path):
    """Every string cell of every file of the clone; nested values as JSON."""
    files = sorted(folder.iterdir())
    assert any(f.name == "webhook_inbox.parquet" for f in files)
    for path in files:
        if path.suffix != ".parquet":
            yield path.name, path.read_text()
            continue
        for row in pq.read_table(path).to_pylist():
            for column, cell in row.items():
                if isinstance(cell, str):
                    yield f"{path.stem}.{column}", cell
                elif isinstance(cell, list | dict):
                    yield f"{path.stem}.{column}", json.dumps(cell)


def _postgres_rows(url: str) -> dict[str, list[dict]]:
    with psycopg.connect(libpq_url(url), row_factory=dict_row) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))).fetchall()
            for t in ("customers", "leads", "conversations", "messages", "webhook_inbox")
        }


def _parquet_rows(folder: Path) -> dict[str, list[dict]]:
    rows = {}
    for t in ("customers", "leads", "conversations", "messages", "webhook_inbox"):
        rows[t] = pq.read_table(folder / f"{t}.parquet").to_pylist()
        for row in rows[t]:  # JSON columns are stored as their text
            for column in ("field_data", "payload"):
                if isinstance(row.get(column), str):
                    row[column] = json.loads(row[column])
    return rows


def _assert_joins_and_shape(rows: dict[str, list[dict]]) -> None:
    """PSIDs still join across tables, page messages keep the page id, structure stays."""
    key = KEY.encode()
    psids = {c["fb_psid"] for c in rows["customers"]} - {None}
    assert psids == {mask_value("psid", p["psid"], key) for p in (ZELDA, BART)}
    convs = {c["id"]: c for c in rows["conversations"]}
    assert {c["psid"] for c in convs.values()} == psids
    by_customer = {c["customer_id"]: c["psid"] for c in convs.values()}
    assert all(by_customer[c["id"]] == c["fb_psid"] for c in rows["customers"] if c["fb_psid"])
    senders = {m["id"]: m["from_id"] for m in rows["messages"]}
    for n in (1, 2):
        assert senders[f"m_{n}b"] == PAGE == convs[f"t_{n}"]["page_id"]
        assert senders[f"m_{n}a"] == convs[f"t_{n}"]["psid"]
    assert all(m["text"].startswith("text-") for m in rows["messages"])
    leads = {lead["id"]: lead for lead in rows["leads"]}
    names = [e["name"] for e in leads["L1001"]["field_data"]]
    assert names == ["email", "full_name", "phone_number", "who_should_we_contact?"]
    assert leads["L1001"]["field_data"][0]["values"] == [leads["L1001"]["email"]]
    assert leads["L1001"]["field_data"][3]["values"][0].startswith("answer-")
    payload = next(r["payload"] for r in rows["webhook_inbox"] if r["event_key"] == "m_2a")
    event = payload["entry"][0]["messaging"][0]
    assert event["sender"]["id"] == mask_value("value", BART["psid"], key)
    assert event["message"]["is_echo"] is False


@pytest.mark.parametrize("kind", ["postgres", "parquet"])
def test_masked_clone_keeps_nothing_personal(seeded, fresh_database_url, tmp_path, kind):
    source_leaks = _leaks(_postgres_cells(seeded))
    assert {s for _, s, _ in source_leaks} == set(SECRETS)  # the seed really holds them all
    target = fresh_database_url if kind == "postgres" else tmp_path / "snap"

    result = clone_database(seeded, target, mask_pii=True, progress=None)

    assert result.ok and result.masked  # the masked copy verified against the masked source
    if kind == "postgres":
        cells, rows = list(_postgres_cells(target)), _postgres_rows(target)
    else:
        cells, rows = list(_parquet_cells(target)), _parquet_rows(target)
    assert len(cells) > 50
    assert _leaks(cells) == []
    _assert_joins_and_shape(rows)


def test_every_masked_column_is_in_the_schema():
    """A renamed column would silently escape the masking: the list must name real columns."""
    for table, columns in PII_COLUMNS.items():
        assert set(columns) <= set(schema.metadata.tables[table].columns.keys()), table
