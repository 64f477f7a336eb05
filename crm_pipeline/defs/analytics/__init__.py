"""Analytics domain: pre-computed KPIs in cache/analytics/summary.json."""
