"""The source database of the clone tests: demo data plus a few thousand rows per table, with
awkward values (tabs, newlines, backslashes, NULLs, PII in JSON)."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal

from sqlalchemy import select, text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.demo import seed_demo_crm

N_CUSTOMERS = 3_000
N_ORDERS = 12_000
N_LEADS = 3_000
N_MESSAGES = 6_000


def populate(engine) -> None:
    """Demo data plus a few thousand rows per table, with awkward values (tabs, newlines, NULLs)."""
    seed_demo_crm(engine)
    rng = random.Random(7)
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        ids = _add_customers_and_orders(conn, rng, t0)
        _add_leads(conn, ids, t0)
        _add_conversations(conn, ids, t0)
        _add_insights(conn)
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload) "
                "SELECT 'leadgen', 'e' || g, jsonb_build_object('n', g) "
                "FROM generate_series(1, 300) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sync_state (stream, scope, state) VALUES "
                "('leads', 'P1', '{\"cursor\": \"abc\"}')"
            )
        )


def _add_customers_and_orders(conn, rng: random.Random, t0: dt.datetime) -> list[int]:
    """Customers (some with awkward names, some without a phone) and their orders; their ids."""
    rows = [
        {
            "name": f'Cüstomer\t{i} \\ "q"\nline' if i % 97 == 0 else f"Customer {i}",
            "email": f"user.{i}@example.com",
            "phone": f"+4420{i:07d}" if i % 3 else None,
            "tier": rng.choice(["bronze", "gold"]),
            "fb_psid": f"psid{i}" if i % 2 else None,
        }
        for i in range(N_CUSTOMERS)
    ]
    bulk_upsert(conn, schema.customers, rows, key=["email"])
    ids = [r[0] for r in conn.execute(select(schema.customers.c.id)).all()]
    bulk_upsert(
        conn,
        schema.orders,
        [
            {
                "external_id": f"T-{i:06d}",
                "customer_id": rng.choice(ids),
                "amount": Decimal(rng.randrange(100, 99_999)) / 100,
                "status": "paid",
                "created_at": t0 + dt.timedelta(minutes=i),
            }
            for i in range(N_ORDERS)
        ],
        key=["external_id"],
    )
    return ids


def _add_leads(conn, ids: list[int], t0: dt.datetime) -> None:
    """Leads, three in four linked to a customer by email, with PII in `field_data`."""
    email_of = dict(conn.execute(select(schema.customers.c.id, schema.customers.c.email)).all())
    lead_rows = []
    for i in range(N_LEADS):
        cid = ids[i % len(ids)] if i % 4 else None
        email = email_of[cid] if cid else f"anon{i}@example.org"
        field_data = [
            {"name": "email", "values": [email]},
            {"name": "full_name", "values": [f"Lead {i}"]},
            {"name": "phone_number", "values": [f"+1999{i:07d}"]},
            {"name": "favourite_colour", "values": ["blue"]},
        ]
        lead_rows.append(
            {
                "id": f"L{i}",
                "form_id": "F1",
                "ad_id": f"A{i % 10}",
                "created_time": t0 + dt.timedelta(hours=i),
                "email": email,
                "phone": f"+1999{i:07d}",
                "full_name": f"Lead {i}",
                "field_data": json.dumps(field_data),
                "customer_id": cid,
            }
        )
    bulk_upsert(conn, schema.leads, lead_rows)


def _add_conversations(conn, ids: list[int], t0: dt.datetime) -> None:
    """Conversations and their messages, some with tabs, newlines and empty texts."""
    bulk_upsert(
        conn,
        schema.conversations,
        [
            {"id": f"t_{i}", "page_id": "P1", "customer_id": ids[i], "psid": f"psid{i}"}
            for i in range(500)
        ],
    )
    bulk_upsert(
        conn,
        schema.messages,
        [
            {
                "id": f"m_{i}",
                "conversation_id": f"t_{i % 500}",
                "from_id": "P1",
                "text": "tab\there, newline\nthere, backslash \\ and ünïcode ✓"
                if i % 50 == 0
                else ("" if i % 51 == 0 else f"message {i}"),
                "created_time": t0 + dt.timedelta(seconds=i),
            }
            for i in range(N_MESSAGES)
        ],
    )


def _add_insights(conn) -> None:
    """Daily ad insights, with NULL reach and money that is not a round number."""
    bulk_upsert(
        conn,
        schema.ad_insights_daily,
        [
            {
                "account_id": "act_1",
                "campaign_id": "C1",
                "adset_id": "S1",
                "ad_id": f"A{i % 10}",
                "date": dt.date(2026, 1, 1) + dt.timedelta(days=i // 10),
                "impressions": i * 10,
                "clicks": i,
                "spend": Decimal(i) / 7,
                "reach": None if i % 3 else i,
                "actions": json.dumps([{"action_type": "lead", "value": str(i % 4)}]),
            }
            for i in range(2_000)
        ],
    )
