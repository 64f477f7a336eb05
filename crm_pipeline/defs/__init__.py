"""Dagster definitions, one folder per domain; `crm_pipeline.definitions` merges them."""
