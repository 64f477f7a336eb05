"""Cache domain: JSON cache files under CRM_CACHE_DIR, and the change-log sensor."""
