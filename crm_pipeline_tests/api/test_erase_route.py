"""`DELETE /api/customers/{id}`: a privacy erasure through the API, with its own scope."""

import time

import pytest
from sqlalchemy import text

from crm_pipeline_tests.api.conftest import issue_key, wait_for_changes

pytestmark = pytest.mark.db


def _customer_with_lead(engine) -> int:
    with engine.begin() as conn:
        cid = conn.execute(
            text(
                "INSERT INTO customers (name, email, phone) VALUES"
                " ('Ana Erased', 'ana@example.org', '+1 415 555 0100') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text("INSERT INTO leads (id, email, full_name, customer_id) VALUES ('L1', :e, :n, :c)"),
            {"e": "ana@example.org", "n": "Ana Erased", "c": cid},
        )
        conn.execute(text("INSERT INTO customers (name, email) VALUES ('Bo', 'bo@example.org')"))
    return cid


def test_erasing_needs_the_privacy_scope_and_removes_the_person(api, clean_db, database_url):
    cid = _customer_with_lead(clean_db)
    eraser = issue_key(database_url, "privacy:erase")
    time.sleep(0.3)  # keys made after startup arrive by notification
    with api.client() as everyday:  # customers:read, analytics:read, crm:write
        assert everyday.get(f"/api/customers/{cid}").json()["customer"]["email"]
        refused = everyday.delete(f"/api/customers/{cid}")
        assert refused.status_code == 403
        assert "privacy:erase" in refused.headers["www-authenticate"]
    with api.client(key=eraser) as client:
        dry = client.delete(f"/api/customers/{cid}", params={"dry_run": "true"})
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True and dry.json()["erasure_id"] is None
        assert dry.json()["counts"]["customers_deleted"] == 1
        assert dry.json()["counts"]["leads"] == 1
        with clean_db.connect() as conn:  # a dry run changes nothing
            assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 1
        done = client.delete(f"/api/customers/{cid}")
        assert done.status_code == 200, done.text
        assert done.json()["counts"] == dry.json()["counts"] | {
            k: v for k, v in done.json()["counts"].items() if k.startswith("cache_")
        }
        assert "ana@example.org" not in done.text
        assert client.delete(f"/api/customers/{cid}").status_code == 404
        assert client.delete("/api/customers/999999").status_code == 404
    wait_for_changes(api, clean_db)
    with api.client() as everyday:
        assert everyday.get(f"/api/customers/{cid}").status_code == 404
        listing = everyday.get("/api/customers")
        assert listing.status_code == 200 and "ana@example.org" not in listing.text
        assert "bo@example.org" in listing.text
    with clean_db.connect() as conn:
        actor = conn.execute(text("SELECT actor FROM erasures")).scalar_one()
    assert actor.startswith("api_key:")


def test_a_shared_identifier_is_refused_unless_allowed(api, clean_db, database_url):
    with clean_db.begin() as conn:
        ids = conn.execute(
            text(
                "INSERT INTO customers (name, phone) VALUES ('A', '+1 415 555 0199'),"
                " ('B', '+1 (415) 555-0199') RETURNING id"
            )
        ).scalars()
        first, _second = list(ids)  # one phone, written two ways: the same digits
    eraser = issue_key(database_url, "privacy:erase")
    time.sleep(0.3)
    with api.client(key=eraser) as client:
        refused = client.delete(f"/api/customers/{first}")
        assert refused.status_code == 409, refused.text
        allowed = client.delete(
            f"/api/customers/{first}", params={"allow_multiple_customers": "true"}
        )
        assert allowed.status_code == 200 and allowed.json()["counts"]["customers_deleted"] == 2
