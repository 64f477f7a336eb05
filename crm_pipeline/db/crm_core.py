"""CRM core rules in SQL: leads become or attach to customers; Messenger PSIDs link chats.

Matching is on normalised contact data: emails compared case-insensitively and trimmed, phones
by their digits (and a leading +). Set-based statements, so a sync of thousands of leads is a
handful of queries.
"""

from sqlalchemy import Connection, text

_NORMAL_EMAIL = "lower(btrim({0}))"
_NORMAL_PHONE = "regexp_replace({0}, '[^0-9+]', '', 'g')"

_ATTACH = f"""
UPDATE leads l SET customer_id = c.id
FROM customers c
WHERE l.customer_id IS NULL
  AND (
        (l.email IS NOT NULL
         AND {_NORMAL_EMAIL.format("c.email")} = {_NORMAL_EMAIL.format("l.email")})
     OR (l.email IS NULL AND l.phone IS NOT NULL
         AND {_NORMAL_PHONE.format("c.phone")} = {_NORMAL_PHONE.format("l.phone")})
  )
"""

# One new customer per distinct email among still-unlinked leads (the earliest lead names them).
_CREATE = f"""
INSERT INTO customers (name, email, phone, tier)
SELECT DISTINCT ON ({_NORMAL_EMAIL.format("email")})
       full_name, {_NORMAL_EMAIL.format("email")}, phone, 'standard'
FROM leads
WHERE customer_id IS NULL AND email IS NOT NULL AND btrim(email) <> ''
ORDER BY {_NORMAL_EMAIL.format("email")}, created_time, id
ON CONFLICT (email) DO NOTHING
"""

_LINK_CONVERSATIONS = """
UPDATE conversations v SET customer_id = c.id FROM customers c
WHERE c.fb_psid = v.psid AND v.customer_id IS DISTINCT FROM c.id
"""


def link_leads_to_customers(conn: Connection) -> dict[str, int]:
    """Attach unlinked leads to matching customers, creating customers for new emails."""
    attached = conn.execute(text(_ATTACH)).rowcount
    created = conn.execute(text(_CREATE)).rowcount
    attached += conn.execute(text(_ATTACH)).rowcount if created else 0
    return {"leads_linked": attached, "customers_created": created}


def link_conversations_to_customers(conn: Connection) -> int:
    """Link conversations to the customer with the participant's PSID."""
    return conn.execute(text(_LINK_CONVERSATIONS)).rowcount
