"""The API service (FastAPI): Facebook webhooks, CRM write routes and cache-first reads."""
