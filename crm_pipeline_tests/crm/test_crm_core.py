from sqlalchemy import text

from crm_pipeline.db.crm_core import link_leads_to_customers


def test_leads_attach_to_existing_customers_or_create_them(clean_db):
    with clean_db.begin() as conn:
        ana = conn.execute(
            text(
                "INSERT INTO customers (name, email, phone) VALUES"
                " ('Ana', 'Ana@Example.com', '+1 (555) 000-1111') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO leads (id, email, phone, full_name, created_time) VALUES"
                " ('l1', ' ana@example.COM ', NULL, 'Ana A', '2026-11-01T00:00:00Z'),"
                " ('l2', NULL, '+15550001111', 'Phone Only', '2026-11-02T00:00:00Z'),"
                " ('l3', 'new@x.io', NULL, 'First Name', '2026-11-03T00:00:00Z'),"
                " ('l4', 'NEW@x.io', NULL, 'Later Name', '2026-11-04T00:00:00Z'),"
                " ('l5', NULL, NULL, 'Anonymous', '2026-11-05T00:00:00Z')"
            )
        )
        result = link_leads_to_customers(conn)
        links = dict(conn.execute(text("SELECT id, customer_id FROM leads")).all())
        new = conn.execute(text("SELECT id, name FROM customers WHERE email = 'new@x.io'")).one()
        again = link_leads_to_customers(conn)
    assert links["l1"] == links["l2"] == ana
    assert links["l3"] == links["l4"] == new.id
    assert new.name == "First Name"
    assert links["l5"] is None
    assert result == {"leads_linked": 4, "customers_created": 1, "leads_ambiguous": 0}
    assert again == {"leads_linked": 0, "customers_created": 0, "leads_ambiguous": 0}
