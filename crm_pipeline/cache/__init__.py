"""The cache registry and everything that turns the database into cache files (Dagster-free)."""
