"""Every committed change row wakes listeners on `crm_changes` (migration 0005)."""

import psycopg
from sqlalchemy import text

from crm_pipeline.db.changelog import CHANNEL, ChangeNotice
from crm_pipeline.db.engine import libpq_url


def _listen(database_url: str) -> psycopg.Connection:
    conn = psycopg.connect(libpq_url(database_url), autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def _drain(conn: psycopg.Connection, wait: float = 0.5) -> list[ChangeNotice]:
    return [ChangeNotice.parse(n.payload) for n in conn.notifies(timeout=wait)]


def test_notified_on_commit_only_with_txid_entity_and_customer(clean_db, database_url):
    with _listen(database_url) as listener:
        with clean_db.connect() as conn:
            tx = conn.begin()
            customer = conn.execute(
                text("INSERT INTO customers (name) VALUES ('Ada') RETURNING id")
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO orders (customer_id, amount, currency, status)"
                    " VALUES (:c, 10, 'EUR', 'paid')"
                ),
                {"c": customer},
            )
            txid = int(conn.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())
            assert _drain(listener, 0.3) == []  # nothing before the commit
            tx.commit()
        notices = _drain(listener)
        assert sorted((n.entity, n.customer_id, n.txid) for n in notices) == [
            ("customers", customer, txid),
            ("orders", customer, txid),
        ]

        with clean_db.connect() as conn, conn.begin():
            conn.execute(text("UPDATE customers SET name = 'Grace' WHERE id = :c"), {"c": customer})
            conn.execute(text("ROLLBACK"))
        assert _drain(listener, 0.3) == []  # rolled back: nothing

        with clean_db.begin() as conn:
            conn.execute(text("TRUNCATE orders"))
        (truncated,) = _drain(listener)
        assert truncated.entity == "orders" and truncated.all_customers

        # A bulk statement on a statement-logged table sends one notice per coarse key row.
        with clean_db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ad_accounts (id, name) VALUES ('act_1', 'A');"
                    "INSERT INTO campaigns (id, account_id, name) SELECT 'c' || g, 'act_1', 'x'"
                    " FROM generate_series(1, 50) g"
                )
            )
        notices = _drain(listener)
        assert [(n.entity, n.customer_id) for n in notices] == [("campaigns", None)]


def test_foreign_payloads_are_not_mistaken_for_changes():
    assert ChangeNotice.parse("hello") is None
    assert ChangeNotice.parse(":customers:1") is None
    assert ChangeNotice.parse("12:customers:") == ChangeNotice(12, "customers", None)
