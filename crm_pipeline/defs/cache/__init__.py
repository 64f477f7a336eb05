"""Cache domain: JSON cache files (CRM_CACHE_URL: a folder or S3), and the change-log sensor."""
