"""`GET /api/customers` on a real uvicorn and PostgreSQL: search, tier and sort as documented,
pages with Link and ETag, 400s for bad parameters, its key and scope, its OpenAPI description,
and the search term kept out of the logs."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
from sqlalchemy import text

from crm_pipeline.api.server import RedactQuerySecrets
from crm_pipeline_tests.api.conftest import issue_key
from crm_pipeline_tests.api.customer_list_helpers import W, add_customers, walk

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PEOPLE = [
    # id, name, email, phone, tier, revenue (paid), minutes after T0 of the last update
    (1, "Ana Silva", "ana.silva@example.com", "+1 555 0100", "gold", 100, 5),
    (2, "anabel Costa", "a.costa@example.com", None, "standard", 50, 1),
    (3, "Mariana Anaya", "mariana@example.com", "+44 20 7946 0958", "silver", 100, 9),
    (4, "Banana Split", "split@example.com", None, "gold", 0, 3),
    (W + 1, "Zed Zulu", "ANA@Example.com", "555-0101", "gold", 0, 7),
    (W + 2, "Jo-Ana Lee", "jo@example.com", "(555) 010-2030", "standard", 0, 2),
    (2 * W + 3, None, None, None, "standard", 0, 4),
]


@pytest.fixture
def people(clean_db):
    add_customers(
        clean_db,
        [
            {"id": i, "name": n, "email": e, "phone": p, "tier": t, "updated_at": T0}
            for i, n, e, p, t, _, _ in PEOPLE
        ],
    )
    with clean_db.begin() as conn:
        for i, *_, revenue, minutes in PEOPLE:
            if revenue:
                conn.execute(
                    text(
                        "INSERT INTO orders (customer_id, amount, status) VALUES (:i, :a, 'paid')"
                    ),
                    {"i": i, "a": revenue},
                )
            conn.execute(  # the orders' own write did not touch it: set last
                text("UPDATE customers SET updated_at = :u WHERE id = :i"),
                {"u": T0 + dt.timedelta(minutes=minutes), "i": i},
            )
        # Neither counts as revenue: a pending order, and a refund.
        conn.execute(
            text("INSERT INTO orders (customer_id, amount, status) VALUES (2, 999, 'pending')")
        )
        conn.execute(
            text("INSERT INTO orders (customer_id, amount, status) VALUES (:i, 300, 'refunded')"),
            {"i": W + 1},
        )
        conn.execute(text("INSERT INTO leads (id, email, customer_id) VALUES ('l-1', 'x@y.z', 3)"))
    return PEOPLE


def _ids(client, **params) -> list[int]:
    return [c["id"] for c in walk(client, **params)]


def test_search_tier_and_sort_as_documented(api, people):
    with api.client() as client:
        # Name order, case-folded; no name first.
        assert _ids(client, limit=2) == [2 * W + 3, 1, 2, 4, W + 2, 3, W + 1]
        # Any word of the name (Anaya, Jo-Ana), or the email (ANA@...), case-insensitively;
        # not a word that only contains it (Banana).
        assert _ids(client, q="ana") == [1, 2, W + 2, 3, W + 1]
        assert _ids(client, q="ANA") == _ids(client, q="ana") == _ids(client, q="  Ana ")
        assert _ids(client, q="ana s") == [1]  # every word a prefix of a word of the name
        assert _ids(client, q="mariana@") == [3]  # a prefix of the email
        assert _ids(client, q="a.co") == [2]
        assert _ids(client, q="+1 555") == [1]  # the phone's digits: 1555...
        assert _ids(client, q="555") == [W + 2, W + 1]
        assert _ids(client, q="555-01") == [W + 2, W + 1]
        assert _ids(client, q="nobody") == []
        assert _ids(client, tier="gold") == [1, 4, W + 1]
        assert _ids(client, tier="gold", q="ana") == [1, W + 1]
        assert _ids(client, tier="platinum") == []
        # Highest revenue first (paid orders only), ties by id; newest update first.
        assert _ids(client, sort="revenue", limit=3) == [1, 3, 2, 4, W + 1, W + 2, 2 * W + 3]
        assert _ids(client, sort="updated", limit=3) == [3, W + 1, 1, 2 * W + 3, 4, W + 2, 2]
        assert _ids(client, sort="revenue", q="ana", tier="gold") == [1, W + 1]
        [ana] = client.get("/api/customers", params={"q": "ana s"}).json()["customers"]
    assert ana == {
        "id": 1,
        "name": "Ana Silva",
        "email": "ana.silva@example.com",
        "phone": "+1 555 0100",
        "tier": "gold",
        "orders": 1,
        "revenue": 100,
        "leads": 0,
        "updated_at": (T0 + dt.timedelta(minutes=5)).isoformat(timespec="microseconds"),
    }


def test_pages_carry_a_next_link_an_etag_and_a_cache_status(api, people):
    with api.client() as client:
        first = client.get("/api/customers", params={"limit": 3, "sort": "revenue"})
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"  # built now
        assert first.headers["cache-control"] == "private, no-cache"
        body = first.json()
        assert [c["id"] for c in body["customers"]] == [1, 3, 2]
        link = first.headers["link"]
        assert link.startswith("</api/customers?") and link.endswith('>; rel="next"')
        assert "limit=3" in link and "sort=revenue" in link
        second = client.get(link[1 : link.index(">")])
        assert [c["id"] for c in second.json()["customers"]] == [4, W + 1, W + 2]
        again = client.get("/api/customers", params={"limit": 3, "sort": "revenue"})
        assert again.headers["x-cache"] == "HIT" and again.content == first.content
        cached = client.get(
            "/api/customers",
            params={"limit": 3, "sort": "revenue"},
            headers={"If-None-Match": first.headers["etag"]},
        )
        assert cached.status_code == 304 and cached.content == b""
        last = client.get("/api/customers", params={"limit": 500})
        assert last.json()["next_cursor"] is None and "link" not in last.headers
        assert len(last.json()["customers"]) == len(people)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "email"}, "sort"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # base64 of something that is not ours
        ({"q": "a" * 201}, "q"),
    ],
)
def test_bad_parameters_answer_400_with_a_problem_document(api, people, params, says):
    with api.client() as client:
        response = client.get("/api/customers", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["detail"].startswith(says)


def test_a_cursor_only_works_with_the_sort_it_was_issued_for(api, people):
    with api.client() as client:
        cursor = client.get("/api/customers", params={"limit": 2}).json()["next_cursor"]
        assert client.get("/api/customers", params={"cursor": cursor}).status_code == 200
        other = client.get("/api/customers", params={"cursor": cursor, "sort": "updated"})
        assert other.status_code == 400 and "sort=name" in other.json()["detail"]
        assert client.get("/api/customers", params={"limit": 500}).status_code == 200


def test_the_list_needs_a_key_with_customers_read(api, people, database_url):
    analyst = issue_key(database_url, "analytics:read")
    time.sleep(0.3)  # keys made after startup arrive by notification
    with api.client(key=None) as anonymous, api.client(key=analyst) as other_scope:
        refused = anonymous.get("/api/customers", params={"q": "ana"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith(
            "Bearer"
        )
        forbidden = other_scope.get("/api/customers", params={"q": "ana"})
        assert forbidden.status_code == 403
        assert "Ana" not in forbidden.text and "ana.silva" not in forbidden.text
        # Checked before anything else: a bad parameter without a key is still a 401.
        assert anonymous.get("/api/customers", params={"limit": 0}).status_code == 401


def test_the_openapi_document_describes_the_parameters_and_the_page(api):
    schema = api.app.openapi()
    operation = schema["paths"]["/api/customers"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"limit", "cursor", "q", "tier", "sort"}
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "default": 50,
    }
    assert parameters["sort"]["schema"]["enum"] == ["name", "revenue", "updated"]
    ok = operation["responses"]["200"]
    assert set(ok["headers"]) >= {"Link", "X-Cache", "ETag"}
    page = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][page]["properties"]
    assert set(fields) == {"customers", "next_cursor"}
    line = fields["customers"]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][line]["properties"]) == {
        "id",
        "name",
        "email",
        "phone",
        "tier",
        "orders",
        "revenue",
        "leads",
        "updated_at",
    }
    assert "400" in operation["responses"] and "401" in operation["responses"]


def test_the_search_term_and_the_cursor_stay_out_of_the_logs(api, people, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    # uvicorn's access log, on for this test (run_live turns it down), reaching caplog.
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "propagate", True)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    with api.client() as client:
        cursor = client.get("/api/customers", params={"q": "mariana", "limit": 1}).json()
        assert client.get("/api/customers", params={"q": "zzmarker"}).status_code == 200
    # The server's records (not the test client's own httpx log of the URL it sent).
    server = " ".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("crm_pipeline", "uvicorn"))
    )
    assert "/api/customers?q=***" in server, "no access log: the test would pass vacuously"
    assert "mariana" not in server.lower() and "zzmarker" not in server
    # uvicorn's access log line, as the API's redaction filter leaves it.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/api/customers?q=Mariana%20An&cursor=abc&limit=5", "1.1", 200),
        None,
    )
    RedactQuerySecrets().filter(record)
    line = record.getMessage()
    assert "Mariana" not in line and "cursor=abc" not in line and "limit=5" in line
    assert cursor["next_cursor"] is None or cursor["next_cursor"] not in server
