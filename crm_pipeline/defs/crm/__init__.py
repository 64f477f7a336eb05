"""CRM domain: the PostgreSQL tables, as assets."""
