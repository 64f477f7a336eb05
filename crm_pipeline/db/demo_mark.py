"""Which databases may receive the bundled emulator's fake data: only those made for a demo.

The demo, `crm-pipeline dev` without credentials and `FB_GRAPH_URL=emulator` write invented
campaigns, leads and conversations. A database is claimed for that once, while it holds no
data of its own, by a row in `sync_state`; a database with data that was never claimed is
refused, so fake rows can never mix with a customer's real ones.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from crm_pipeline.config import ConfigError, redact_url

_STREAM, _SCOPE = "crm_pipeline", "demo_database"
# Tables that hold data of their own once anything real was written.
_DATA_TABLES = ("customers", "orders", "leads", "conversations", "ad_insights_daily", "campaigns")


def is_demo_database(conn: Connection) -> bool:
    """True when this database was claimed for demo data."""
    return (
        conn.execute(
            text("SELECT 1 FROM sync_state WHERE stream = :s AND scope = :c"),
            {"s": _STREAM, "c": _SCOPE},
        ).first()
        is not None
    )


def claim_for_demo(conn: Connection) -> None:
    """Mark the database as a demo database, or refuse when it already holds other data."""
    if is_demo_database(conn):
        return
    holding = [
        table
        for table in _DATA_TABLES
        if conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar()
    ]
    if holding:
        url = redact_url(conn.engine.url.render_as_string(hide_password=True))
        raise ConfigError(
            f"the database at {url} holds data ({', '.join(holding)}) and was not created for a "
            "demo: the bundled emulator's fake data must not mix with it. Use an empty database "
            "(or leave CRM_DATABASE_URL unset for the embedded one), or configure real Meta "
            "credentials (FB_ACCESS_TOKEN, FB_AD_ACCOUNT_IDS, FB_PAGE_ID) instead of the emulator."
        )
    conn.execute(
        text(
            "INSERT INTO sync_state (stream, scope, state) VALUES (:s, :c, '{}'::jsonb)"
            " ON CONFLICT DO NOTHING"
        ),
        {"s": _STREAM, "c": _SCOPE},
    )
