"""Customer 360 documents: one file per customer, built in set-based SQL (the customer list is
`customer_index`)."""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, text

PROFILE_DIR = "customers"
RECENT_MESSAGES = 20  # per conversation, newest first

# `updated_by`: who last changed the row (an API key as `api_key:<name>`, else a DB role).
_CUSTOMERS = """
SELECT id, name, email, phone, tier, fb_psid, created_at, updated_at, updated_by
FROM customers WHERE id = ANY(:ids) ORDER BY id
"""
_LEADS = """
SELECT l.customer_id, l.id, l.form_id, l.ad_id, l.campaign_id, l.created_time, l.email,
       l.phone, l.full_name, l.field_data
FROM leads l WHERE l.customer_id = ANY(:ids) ORDER BY l.customer_id, l.created_time DESC, l.id
"""
_ORDERS = """
SELECT customer_id, id, external_id, amount, currency, status, created_at
FROM orders WHERE customer_id = ANY(:ids) ORDER BY customer_id, created_at DESC, id
"""
_CONVERSATIONS = """
SELECT v.customer_id, v.id, v.page_id, v.updated_time,
       coalesce(m.messages, '[]'::jsonb) AS messages
FROM conversations v
LEFT JOIN LATERAL (
    SELECT jsonb_agg(
               jsonb_build_object('id', x.id, 'from_id', x.from_id, 'text', x.text,
                                  'created_time', x.created_time)
               ORDER BY x.created_time DESC
           ) AS messages
    FROM (SELECT * FROM messages WHERE conversation_id = v.id
          ORDER BY created_time DESC LIMIT :recent) x
) m ON true
WHERE v.customer_id = ANY(:ids) ORDER BY v.customer_id, v.updated_time DESC, v.id
"""
# Attribution: the campaign and ad of the customer's first lead.
_ATTRIBUTION = """
SELECT DISTINCT ON (l.customer_id) l.customer_id, l.ad_id, a.name AS ad_name,
       coalesce(l.campaign_id, a.campaign_id) AS campaign_id, c.name AS campaign_name
FROM leads l
LEFT JOIN ads a ON a.id = l.ad_id
LEFT JOIN campaigns c ON c.id = coalesce(l.campaign_id, a.campaign_id)
WHERE l.customer_id = ANY(:ids) AND l.ad_id IS NOT NULL
ORDER BY l.customer_id, l.created_time, l.id
"""


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _row(r) -> dict[str, Any]:
    return {k: _iso(v) for k, v in r._asdict().items() if k != "customer_id"}


def build_profiles(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Customer 360 payloads for the customers in `ids` that exist (missing ids are absent)."""
    params = {"ids": list(ids), "recent": RECENT_MESSAGES}
    grouped: dict[str, dict[int, list]] = {}
    for name, query in (("leads", _LEADS), ("orders", _ORDERS), ("conversations", _CONVERSATIONS)):
        by_customer: dict[int, list] = defaultdict(list)
        for r in conn.execute(text(query), params):
            by_customer[r.customer_id].append(_row(r))
        grouped[name] = by_customer
    attribution = {r.customer_id: _row(r) for r in conn.execute(text(_ATTRIBUTION), params)}
    profiles = {}
    for customer in conn.execute(text(_CUSTOMERS), params):
        cid = customer.id
        orders = grouped["orders"].get(cid, [])
        profiles[cid] = {
            "customer": {k: _iso(v) for k, v in customer._asdict().items()},
            "leads": grouped["leads"].get(cid, []),
            "conversations": grouped["conversations"].get(cid, []),
            "orders": orders,
            "attribution": attribution.get(cid),
            "totals": {
                "orders": len(orders),
                "leads": len(grouped["leads"].get(cid, [])),
                "conversations": len(grouped["conversations"].get(cid, [])),
            },
        }
    return profiles


def all_customer_ids(conn: Connection, batch: int = 1000) -> Iterator[list[int]]:
    """Every customer id, in batches (keyset paging keeps memory flat for large tables)."""
    last = 0
    while True:
        ids = (
            conn.execute(
                text("SELECT id FROM customers WHERE id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": batch},
            )
            .scalars()
            .all()
        )
        if not ids:
            return
        yield list(ids)
        last = ids[-1]
