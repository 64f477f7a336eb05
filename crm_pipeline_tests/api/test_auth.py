"""API keys and scopes on a real uvicorn: who may read personal data, aggregates, or write."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import text

from crm_pipeline.api import auth
from crm_pipeline.db.api_keys import hash_key
from crm_pipeline_tests.api.conftest import issue_key

WRITES = [
    ("POST", "/api/customers", {"name": "Eve"}),
    ("PATCH", "/api/customers/{cid}", {"name": "Eve"}),
    ("POST", "/api/orders", {"external_id": "X-1", "customer_id": 1, "amount": "1.00"}),
    ("PATCH", "/api/orders/1", {"status": "paid"}),
    ("POST", "/api/leads", {"email": "eve@example.com"}),
    ("POST", "/api/conversations/t_1/messages", {"text": "hi"}),
]


def _customer(engine) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO customers (name, email) VALUES ('Ada', 'ada@x.io') RETURNING id")
        ).scalar_one()


def _api_operations(app) -> list[tuple[str, str]]:
    schema = app.openapi()
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for method in item
    ]


def test_every_api_route_needs_a_key_and_declares_its_scope(api, clean_db):
    operations = _api_operations(api.app)
    assert len(operations) >= 10
    with api.client(key=None) as anonymous, api.client(key="crm_not-a-real-key") as unknown:
        for method, path in operations:
            url = re.sub(r"\{[^}]+\}", "1", path)
            for client, error in ((anonymous, None), (unknown, "invalid_token")):
                response = client.request(method, url, json={})
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                challenge = response.headers["www-authenticate"]
                assert challenge.startswith("Bearer")
                assert (f'error="{error}"' in challenge) == (error is not None)
        assert anonymous.get("/health").status_code == 200  # open, and not customer data
        handshake = anonymous.get(
            "/webhooks/facebook", params={"hub.mode": "subscribe", "hub.challenge": "7"}
        )
        assert handshake.status_code == 403  # the verify token guards it, not an API key

    schema = api.app.openapi()
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for method, path in operations:
        security = schema["paths"][path][method.lower()]["security"]
        [[(name, scopes)]] = [list(s.items()) for s in security]
        assert name == "ApiKey" and len(scopes) == 1, (method, path, security)
        expected = (
            "privacy:erase"
            if method == "DELETE"
            else "crm:write"
            if method != "GET"
            else "customers:read"
            if path.startswith("/api/customers")
            else "analytics:read"
        )
        assert scopes == [expected], (method, path)
    assert "security" not in schema["paths"]["/health"]["get"]


def test_scopes_separate_personal_data_aggregates_and_writes(api, clean_db, database_url):
    cid = _customer(clean_db)
    analyst = issue_key(database_url, "analytics:read")
    clerk = issue_key(database_url, "customers:read,crm:write")
    time.sleep(0.3)  # keys made after startup arrive by notification
    with api.client(key=analyst) as client:
        assert client.get("/api/analytics/summary").status_code == 200
        assert client.get("/api/marketing/insights").status_code == 200
        for route in (f"/api/customers/{cid}", "/api/customers"):
            refused = client.get(route)
            assert refused.status_code == 403
            assert "insufficient_scope" in refused.headers["www-authenticate"]
            assert "Ada" not in refused.text and "ada@x.io" not in refused.text
        for method, path, body in WRITES:
            response = client.request(method, path.format(cid=cid), json=body)
            assert response.status_code == 403, (method, path)
    with api.client(key=clerk) as client:
        assert client.get(f"/api/customers/{cid}").json()["customer"]["name"] == "Ada"
        assert client.post("/api/customers", json={"name": "Bea"}).status_code == 201
        assert client.get("/api/analytics/summary").status_code == 403


def test_keys_created_and_revoked_while_running_take_effect_within_two_seconds(
    api, clean_db, database_url
):
    late = issue_key(database_url, "analytics:read", name="late-key")
    with api.client(key=late) as client:
        deadline = time.monotonic() + 2
        while client.get("/api/analytics/summary").status_code != 200:
            assert time.monotonic() < deadline, "a new key was not accepted within 2 s"
            time.sleep(0.05)
        with clean_db.begin() as conn:  # as `crm-pipeline api-keys revoke late-key` does
            conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE name = 'late-key'"))
        revoked_at = time.monotonic()
        while client.get("/api/analytics/summary").status_code != 401:
            assert time.monotonic() - revoked_at < 2, "a revoked key was accepted after 2 s"
            time.sleep(0.05)


def test_use_is_recorded_without_slowing_requests(clean_db, database_url, start_api, monkeypatch):
    monkeypatch.setattr(auth, "TOUCH_SECONDS", 0.2)
    live = start_api(database_url)
    with live.client() as client:
        assert client.get("/api/analytics/summary").status_code == 200

    def used() -> bool:
        with clean_db.connect() as conn:
            return conn.execute(
                text("SELECT last_used_at IS NOT NULL FROM api_keys WHERE key_hash = :h"),
                {"h": hash_key(live.key)},
            ).scalar_one()

    deadline = time.monotonic() + 5
    while not used():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "bearer x y", "Token abc"])
def test_other_authorization_schemes_are_refused(api, clean_db, header):
    with api.client(key=None) as client:
        response = client.get("/api/analytics/summary", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
