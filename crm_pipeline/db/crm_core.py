"""CRM core rules in SQL: leads become or attach to customers; Messenger PSIDs link chats.

Matching is on normalised contact data: emails compared case-insensitively and trimmed, phones
by their digits (and a leading +). Set-based statements, so a sync of thousands of leads is a
handful of queries.
"""

from collections.abc import Sequence

from sqlalchemy import Connection, text

_NORMAL_EMAIL = "lower(btrim({0}))"
_NORMAL_PHONE = "regexp_replace({0}, '[^0-9+]', '', 'g')"

# Only leads still unlinked (and, when given, only these ids: `:ids` NULL means all).
_UNLINKED = "l.customer_id IS NULL AND (CAST(:ids AS text[]) IS NULL OR l.id = ANY(:ids))"

_ATTACH_BY_EMAIL = f"""
UPDATE leads l SET customer_id = c.id
FROM customers c
WHERE {_UNLINKED} AND l.email IS NOT NULL
  AND {_NORMAL_EMAIL.format("c.email")} = {_NORMAL_EMAIL.format("l.email")}
"""

# A phone identifies a customer only when exactly one customer has it: a lead matching two
# customers by phone stays unlinked (and is counted) rather than joining an arbitrary one.
_PHONE_MATCHES = f"""
SELECT l.id AS lead_id, min(c.id) AS customer_id, count(*) AS matches
FROM leads l JOIN customers c
  ON {_NORMAL_PHONE.format("c.phone")} = {_NORMAL_PHONE.format("l.phone")}
WHERE {_UNLINKED} AND l.email IS NULL AND l.phone IS NOT NULL
  AND {_NORMAL_PHONE.format("l.phone")} <> ''
GROUP BY l.id
"""
_ATTACH_BY_PHONE = f"""
WITH m AS ({_PHONE_MATCHES})
UPDATE leads l SET customer_id = m.customer_id FROM m WHERE l.id = m.lead_id AND m.matches = 1
"""
_AMBIGUOUS_PHONES = f"SELECT count(*) FROM ({_PHONE_MATCHES}) m WHERE m.matches > 1"

# One new customer per distinct email among still-unlinked leads (the earliest lead names them).
_CREATE = f"""
INSERT INTO customers (name, email, phone, tier)
SELECT DISTINCT ON ({_NORMAL_EMAIL.format("email")})
       full_name, {_NORMAL_EMAIL.format("email")}, phone, 'standard'
FROM leads l
WHERE {_UNLINKED} AND email IS NOT NULL AND btrim(email) <> ''
ORDER BY {_NORMAL_EMAIL.format("email")}, created_time, id
ON CONFLICT (email) DO NOTHING
"""

_LINK_CONVERSATIONS = """
UPDATE conversations v SET customer_id = c.id FROM customers c
WHERE c.fb_psid = v.psid AND v.customer_id IS DISTINCT FROM c.id
"""


def link_leads_to_customers(
    conn: Connection, lead_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """Attach unlinked leads to matching customers, creating customers for new emails.

    Only `lead_ids` when given (one API write), else every unlinked lead (a sync). A lead with
    no email whose phone matches several customers is left unlinked and counted as ambiguous.
    """
    params = {"ids": list(lead_ids) if lead_ids is not None else None}

    def attach() -> int:
        return (
            conn.execute(text(_ATTACH_BY_EMAIL), params).rowcount
            + conn.execute(text(_ATTACH_BY_PHONE), params).rowcount
        )

    attached = attach()
    created = conn.execute(text(_CREATE), params).rowcount
    attached += attach() if created else 0
    ambiguous = conn.execute(text(_AMBIGUOUS_PHONES), params).scalar_one()
    return {"leads_linked": attached, "customers_created": created, "leads_ambiguous": ambiguous}


def link_conversations_to_customers(conn: Connection) -> int:
    """Link conversations to the customer with the participant's PSID."""
    return conn.execute(text(_LINK_CONVERSATIONS)).rowcount


# The order statuses the API accepts (other writers are not held to them). The KPIs count
# `REVENUE_STATUSES`, a subset, as revenue.
ORDER_STATUSES = ("pending", "paid", "shipped", "completed", "refunded", "cancelled")
