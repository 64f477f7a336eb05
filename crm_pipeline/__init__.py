"""crm-pipeline: Meta marketing data into PostgreSQL, a reactive JSON cache and KPIs, on Dagster."""
