"""Customers for the customer list tests, and walking its pages as a client would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine, text

from crm_pipeline.cache.customer_index import SEGMENT_WIDTH

W = SEGMENT_WIDTH


def add_customers(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert customers with the given ids (and other columns), as psql would."""
    with engine.begin() as conn:
        for row in rows:
            columns = ", ".join(row)
            values = ", ".join(f":{k}" for k in row)
            conn.execute(text(f"INSERT INTO customers ({columns}) VALUES ({values})"), row)
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('customers', 'id'), :n)"),
            {"n": 10 * W},
        )


def walk(
    client: httpx.Client,
    between: Callable[[int, list[dict[str, Any]]], None] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every customer of the list, page by page through `next_cursor` (checked against the
    Link header); `between(page_number, page)` runs after each page but the last."""
    seen: list[dict[str, Any]] = []
    cursor, cursors = None, set()
    for number in range(10_000):
        response = client.get(
            "/api/customers", params={**params, "cursor": cursor} if cursor else params
        )
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["customers"]
        cursor = body["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            return seen
        assert cursor not in cursors, "the pages went round in a circle"
        cursors.add(cursor)
        link = httpx.URL(response.headers["link"].split(";")[0].strip("<>"))
        assert link.path == "/api/customers" and link.params["cursor"] == cursor
        assert response.headers["link"].endswith('; rel="next"')
        if between is not None:
            between(number, body["customers"])
    raise AssertionError("the pages never ended")
