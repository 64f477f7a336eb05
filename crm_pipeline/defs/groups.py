"""Asset group names, said once: what each group holds is how the Dagster UI lays out lineage.

- `facebook_raw`: what Meta's API returned, landed as Parquet (`CRM_DATA_DIR/raw`).
- `facebook`: the Meta tables in PostgreSQL (ad accounts and objects, daily insights, leads,
  conversations and messages), loaded from the raw files or from webhooks.
- `crm`: the CRM's own tables (customers, orders), written by the API, other apps and psql, and
  the database snapshot.
- `cache`: the JSON cache files the UI reads; `analytics`: summary.json for analysts.
- `privacy`: what removes personal data (the daily `personal_data_retention`).
"""

FACEBOOK_RAW = "facebook_raw"
FACEBOOK = "facebook"
CRM = "crm"
CACHE = "cache"
ANALYTICS = "analytics"
PRIVACY = "privacy"
