"""Writes that cannot be turned against existing data, and who wrote what."""

from __future__ import annotations

from sqlalchemy import text

from crm_pipeline.db.crm_core import link_leads_to_customers
from crm_pipeline_tests.api.conftest import issue_key


def _customers(client, *names: str) -> list[int]:
    ids = []
    for name in names:
        response = client.post("/api/customers", json={"name": name})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_an_order_never_moves_to_another_customer(api, clean_db):
    with api.client() as client:
        ana, bo = _customers(client, "Ana", "Bo")
        order = {"external_id": "SO-7", "customer_id": ana, "amount": "10.00", "currency": "eur"}
        created = client.post("/api/orders", json=order)
        assert created.status_code == 201 and created.json()["currency"] == "EUR"
        oid = created.json()["id"]

        stolen = client.post("/api/orders", json={**order, "customer_id": bo})
        assert stolen.status_code == 409
        assert "another customer" in stolen.json()["detail"]

        retry = client.post("/api/orders", json={**order, "amount": "10"})
        assert (retry.status_code, retry.json()["id"]) == (200, oid)  # same order: idempotent

        changed = client.post("/api/orders", json={**order, "status": "refunded"})
        assert changed.status_code == 409
        assert (
            changed.json()["order_id"] == oid and f"/api/orders/{oid}" in changed.json()["detail"]
        )

        patched = client.patch(f"/api/orders/{oid}", json={"status": "refunded", "amount": "9.5"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["status"] == "refunded"
        assert client.patch(f"/api/orders/{oid}", json={"customer_id": bo}).status_code == 422
        assert client.patch(f"/api/orders/{oid}", json={"status": None}).status_code == 422
        assert client.patch("/api/orders/999999", json={"status": "paid"}).status_code == 404

        for bad in ({"currency": "ABC"}, {"currency": "EURO"}, {"status": "stolen"}):
            response = client.post("/api/orders", json={**order, "external_id": "SO-8", **bad})
            assert response.status_code == 422, bad
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT customer_id, amount, status FROM orders")).one()
    assert (row.customer_id, str(row.amount), row.status) == (ana, "9.50", "refunded")


def test_a_lead_id_never_echoes_or_overwrites_a_stored_lead(api, clean_db):
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO leads (id, email, full_name, phone) VALUES"
                " ('L-1', 'victim@example.com', 'Victim Name', '+1 555 0100')"
            )
        )
    with api.client() as client:
        probe = client.post("/api/leads", json={"id": "L-1", "email": "attacker@example.com"})
        assert probe.status_code == 409
        for secret in ("victim", "Victim Name", "555 0100"):
            assert secret not in probe.text

        lead = {"id": "W-1", "email": "Sam@Example.com", "full_name": "Sam"}
        first = client.post("/api/leads", json=lead)
        assert first.status_code == 201, first.text
        again = client.post("/api/leads", json=lead)
        assert again.status_code == 200 and again.json() == first.json()
        assert client.post("/api/leads", json={**lead, "full_name": "Other"}).status_code == 409
    with clean_db.connect() as conn:
        stored = conn.execute(text("SELECT email, full_name FROM leads WHERE id = 'L-1'")).one()
    assert tuple(stored) == ("victim@example.com", "Victim Name")


def test_a_phone_shared_by_two_customers_links_nobody(api, clean_db):
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (name, phone) VALUES"
                " ('Twin A', '+1 (555) 010-0200'), ('Twin B', '+15550100200'),"
                " ('Solo', '+1 555 010 0300')"
            )
        )
    with api.client() as client:
        shared = client.post("/api/leads", json={"phone": "+1 555 010 0200"})
        solo = client.post("/api/leads", json={"phone": "+1-555-010-0300"})
    assert shared.status_code == solo.status_code == 201
    assert shared.json()["customer_id"] is None
    assert solo.json()["customer_id"] is not None
    with clean_db.begin() as conn:
        counts = link_leads_to_customers(conn)
    assert counts["leads_ambiguous"] == 1 and counts["leads_linked"] == 0


def test_emails_are_nfkc_normalised_before_matching(api, clean_db):
    with api.client() as client:
        created = client.post("/api/customers", json={"name": "Ana", "email": "ａｎａ@Example.com"})
        assert created.status_code == 201
        assert created.json()["email"] == "ana@example.com"
        duplicate = client.post("/api/customers", json={"email": "ANA@example.com"})
        assert duplicate.status_code == 409
        lead = client.post("/api/leads", json={"email": "Ａna@example.COM"})
    assert lead.json()["customer_id"] == created.json()["id"]


def test_patching_a_psid_links_that_persons_conversations(api, clean_db):
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, psid) VALUES"
                " ('t_1', '777', 'psid-1'), ('t_2', '777', 'psid-2')"
            )
        )
    with api.client() as client:
        [cid] = _customers(client, "Ana")
        assert client.patch(f"/api/customers/{cid}", json={"fb_psid": "psid-1"}).status_code == 200
        profile = client.get(f"/api/customers/{cid}").json()
    assert [c["id"] for c in profile["conversations"]] == ["t_1"]


def test_change_rows_name_the_api_key_or_the_database_role(api, clean_db, database_url):
    writer = issue_key(database_url, "customers:read,crm:write", name="shop-backend")
    import time

    time.sleep(0.3)  # the key arrives by notification
    with api.client(key=writer) as client:
        [cid] = _customers(client, "Ana")
        assert client.patch(f"/api/customers/{cid}", json={"tier": "gold"}).status_code == 200
        order = {"external_id": "SO-1", "customer_id": cid, "amount": "5.00"}
        assert client.post("/api/orders", json=order).status_code == 201
        assert client.get(f"/api/customers/{cid}").json()["customer"]["updated_by"] == (
            "api_key:shop-backend"
        )
    with clean_db.begin() as conn:  # psql, another app: attributed to their role
        role = conn.execute(text("SELECT current_user")).scalar_one()
        conn.execute(text("UPDATE customers SET name = 'Ana B' WHERE id = :id"), {"id": cid})
    with clean_db.begin() as conn:  # a distinct role, as another application would use
        conn.execute(text("DROP ROLE IF EXISTS crm_other_app"))
        conn.execute(text("CREATE ROLE crm_other_app"))
        conn.execute(text("GRANT INSERT, SELECT ON orders, change_log TO crm_other_app"))
        conn.execute(text("GRANT SELECT ON customers, conversations TO crm_other_app"))
        conn.execute(text("SET LOCAL ROLE crm_other_app"))
        conn.execute(
            text(
                "INSERT INTO orders (customer_id, amount, currency, status)"
                " VALUES (:id, 3, 'USD', 'paid')"
            ),
            {"id": cid},
        )
        conn.execute(text("RESET ROLE"))
        conn.execute(
            text("REVOKE ALL ON orders, change_log, customers, conversations FROM crm_other_app")
        )
        conn.execute(text("DROP ROLE crm_other_app"))
    with clean_db.connect() as conn:
        actors = [
            tuple(r)
            for r in conn.execute(text("SELECT entity, op, actor FROM change_log ORDER BY id"))
        ]
        updated_by = conn.execute(
            text("SELECT updated_by FROM customers WHERE id = :id"), {"id": cid}
        ).scalar_one()
    assert actors == [
        ("customers", "insert", "api_key:shop-backend"),
        ("customers", "update", "api_key:shop-backend"),
        ("orders", "insert", "api_key:shop-backend"),
        ("customers", "update", role),
        ("orders", "insert", "crm_other_app"),
    ]
    assert updated_by == role


def test_webhook_writes_are_attributed_to_the_webhook(api, clean_db):
    import time

    from graph_emulator.webhooks import messenger_payload, post_webhook

    from crm_pipeline_tests.api.conftest import APP_SECRET

    payload = messenger_payload("777", "9001", "m_attributed", "hello", int(time.time() * 1000))
    assert post_webhook(f"{api.url}/webhooks/facebook", payload, APP_SECRET) == 200
    with clean_db.connect() as conn:
        actors = set(conn.execute(text("SELECT actor FROM change_log")).scalars())
    assert actors == {"webhook:facebook"}
