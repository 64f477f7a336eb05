"""Write routes: one transaction each, change capture by the triggers, problem details."""

from __future__ import annotations

from sqlalchemy import text


def _changes(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT entity, entity_key, op FROM change_log ORDER BY id"))
        ]


def test_customer_create_and_patch(api, clean_db):
    with api.client() as client:
        created = client.post(
            "/api/customers", json={"name": "Ada", "email": "Ada@Example.com", "tier": "gold"}
        )
        assert created.status_code == 201, created.text
        customer = created.json()
        assert customer["email"] == "ada@example.com"
        assert customer["tier"] == "gold"
        cid = customer["id"]

        duplicate = client.post("/api/customers", json={"email": "ada@example.com"})
        assert duplicate.status_code == 409
        assert duplicate.headers["content-type"] == "application/problem+json"
        assert "ada@example.com" not in duplicate.text  # no row values echoed back

        patched = client.patch(f"/api/customers/{cid}", json={"phone": "+44 20 7946 0000"})
        assert patched.status_code == 200
        assert patched.json()["phone"] == "+44 20 7946 0000"
        assert patched.json()["name"] == "Ada"
        assert client.patch("/api/customers/999999", json={"name": "X"}).status_code == 404
        assert client.patch(f"/api/customers/{cid}", json={"tier": None}).status_code == 422
    assert _changes(clean_db) == [
        ("customers", str(cid), "insert"),
        ("customers", str(cid), "update"),
    ]


def test_orders_are_idempotent_on_external_id(api, clean_db):
    with api.client() as client:
        cid = client.post("/api/customers", json={"name": "Bo"}).json()["id"]
        order = {"external_id": "SO-1", "customer_id": cid, "amount": "19.99", "currency": "EUR"}
        first = client.post("/api/orders", json=order)
        assert first.status_code == 201, first.text
        assert first.json()["amount"] in ("19.99", 19.99)
        again = client.post("/api/orders", json=order)
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        unknown = client.post(
            "/api/orders", json={**order, "external_id": "SO-2", "customer_id": 424242}
        )
        assert unknown.status_code == 422
        bad = client.post("/api/orders", json={**order, "amount": "-1"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["loc"][-1] == "amount"
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar() == 1
    assert ("orders", str(first.json()["id"]), "insert") in _changes(clean_db)


def test_form_lead_links_to_existing_customer_or_creates_one(api, clean_db):
    with api.client() as client:
        cid = client.post("/api/customers", json={"email": "cy@example.com"}).json()["id"]
        lead = client.post(
            "/api/leads",
            json={
                "email": " CY@example.com",
                "full_name": "Cy",
                "form_id": "web-contact",
                "field_data": [{"name": "interest", "values": ["boots"]}],
            },
        )
        assert lead.status_code == 201, lead.text
        assert lead.json()["customer_id"] == cid
        fresh = client.post("/api/leads", json={"id": "web-42", "email": "new@example.com"})
        assert fresh.status_code == 201
        assert fresh.json()["customer_id"] not in (None, cid)
        retried = client.post("/api/leads", json={"id": "web-42", "email": "new@example.com"})
        assert retried.json()["customer_id"] == fresh.json()["customer_id"]
        assert client.post("/api/leads", json={"full_name": "Nobody"}).status_code == 422
    entities = {c[0] for c in _changes(clean_db)}
    assert {"customers", "leads"} <= entities


def test_message_route(api, clean_db):
    with clean_db.begin() as conn:
        conn.execute(
            text("INSERT INTO conversations (id, page_id, psid) VALUES ('t_1', '2001', '9')")
        )
    with api.client() as client:
        created = client.post("/api/conversations/t_1/messages", json={"text": "We have it."})
        assert created.status_code == 201, created.text
        assert created.json()["from_id"] == "2001"
        assert created.json()["conversation_id"] == "t_1"
        missing = client.post("/api/conversations/t_nope/messages", json={"text": "hi"})
        assert missing.status_code == 404
    assert ("messages", created.json()["id"], "insert") in _changes(clean_db)


def test_malformed_and_invalid_bodies_are_problem_details(api):
    with api.client() as client:
        malformed = client.post(
            "/api/customers", content=b'{"name": ', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.headers["content-type"] == "application/problem+json"
        unknown_field = client.post("/api/customers", json={"name": "A", "is_admin": True})
        assert unknown_field.status_code == 422
        bad_email = client.post("/api/customers", json={"email": "not-an-email"})
        assert bad_email.status_code == 422
        assert "not-an-email" not in bad_email.text
        assert client.get("/api/customers/abc").status_code == 422
        nul = client.post("/api/leads", json={"email": "a@b.c", "full_name": "A\u0000B"})
        assert nul.status_code == 422  # PostgreSQL cannot store U+0000: refused, not a 500
        assert client.get("/no/such/route").status_code == 404


def test_openapi_and_health(api):
    with api.client() as client:
        schema = client.get("/openapi.json").json()
        assert {
            "/webhooks/facebook",
            "/api/customers",
            "/api/orders",
            "/api/leads",
            "/api/customers/{customer_id}",
            "/api/analytics/summary",
            "/api/marketing/insights",
            "/health",
        } <= schema["paths"].keys()
        assert client.get("/health").json() == {"status": "ok", "database": "up"}
