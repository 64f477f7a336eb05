"""summary.json's queries as they were before the rollups (migration 0008): every KPI straight
from the source tables. The rollup tests build the summary with these in place of
`cache.kpi_queries` ("the old way") and require the same document, byte for byte."""


# Text ordering uses the "C" collation so that every list comes out in the same order whatever
# the server's locale (and in the same order as Python's `sorted`).

REVENUE_BY_CURRENCY = """
SELECT currency,
       sum(amount) AS total,
       count(*) AS orders,
       coalesce(sum(amount) FILTER (WHERE created_at >= :start AND created_at < :end), 0)
           AS last_30_days,
       count(*) FILTER (WHERE created_at >= :start AND created_at < :end) AS orders_last_30_days,
       round(sum(amount) / count(*), 2) AS average_order_value
FROM orders WHERE status = ANY(:statuses)
GROUP BY currency ORDER BY currency COLLATE "C"
"""
REVENUE_BY_MONTH = """
SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, currency,
       sum(amount) AS revenue, count(*) AS orders
FROM orders WHERE status = ANY(:statuses)
GROUP BY 1, 2 ORDER BY 1, currency COLLATE "C"
"""
BY_TIER = """
SELECT c.tier, count(*) AS customers, coalesce(sum(o.revenue), 0) AS revenue
FROM customers c
LEFT JOIN (
    SELECT customer_id, sum(amount) AS revenue FROM orders
    WHERE status = ANY(:statuses) GROUP BY customer_id
) o ON o.customer_id = c.id
GROUP BY c.tier ORDER BY c.tier COLLATE "C"
"""
AD_SPEND = """
SELECT coalesce(sum(spend), 0) AS total,
       coalesce(sum(spend) FILTER (WHERE date BETWEEN :first_day AND :last_day), 0)
           AS last_30_days,
       coalesce(sum(impressions), 0)::bigint AS impressions,
       coalesce(sum(clicks), 0)::bigint AS clicks,
       coalesce(sum(leads), 0)::bigint AS leads,
       coalesce(sum(leads) FILTER (WHERE date BETWEEN :first_day AND :last_day), 0)::bigint
           AS leads_last_30_days,
       coalesce(sum(purchases), 0)::bigint AS purchases,
       coalesce(sum(purchase_value), 0) AS purchase_value,
       min(date) AS first_date, max(date) AS last_date
FROM ad_insights_daily
"""
SPEND_BY_CAMPAIGN = """
SELECT i.campaign_id, c.name AS campaign_name,
       sum(i.spend) AS spend,
       coalesce(sum(i.spend) FILTER (WHERE i.date BETWEEN :first_day AND :last_day), 0)
           AS spend_last_30_days,
       sum(i.impressions)::bigint AS impressions,
       sum(i.clicks)::bigint AS clicks,
       sum(i.leads)::bigint AS leads,
       CASE WHEN sum(i.leads) > 0 THEN round(sum(i.spend) / sum(i.leads), 2) END
           AS cost_per_lead
FROM ad_insights_daily i LEFT JOIN campaigns c ON c.id = i.campaign_id
GROUP BY i.campaign_id, c.name
ORDER BY sum(i.spend) DESC, i.campaign_id COLLATE "C"
"""
LEADS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE created_time >= :start AND created_time < :end) AS last_30_days,
       count(*) FILTER (WHERE form_id IS NOT NULL) AS lead_ads,
       count(*) FILTER (
           WHERE form_id IS NOT NULL AND created_time >= :start AND created_time < :end
       ) AS lead_ads_last_30_days
FROM leads
"""
LEADS_BY_DAY = """
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') d
), per_day AS (
    SELECT (created_time AT TIME ZONE 'UTC')::date AS day, count(*) AS leads
    FROM leads WHERE created_time >= :start AND created_time < :end
    GROUP BY 1
)
SELECT days.day AS date, coalesce(per_day.leads, 0) AS leads
FROM days LEFT JOIN per_day USING (day)
ORDER BY days.day
"""
SPEND_BY_DAY = """
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') d
), per_day AS (
    SELECT date AS day, sum(spend) AS spend, sum(leads)::bigint AS leads
    FROM ad_insights_daily WHERE date BETWEEN :first_day AND :last_day
    GROUP BY date
)
SELECT days.day AS date, coalesce(per_day.spend, 0) AS spend, coalesce(per_day.leads, 0) AS leads
FROM days LEFT JOIN per_day USING (day)
ORDER BY days.day
"""
# First-touch attribution: each customer belongs to the campaign of their earliest lead that
# names one (directly, or through the lead's ad), and brings the revenue of their orders placed
# at or after that lead. One campaign per customer, so no revenue is counted twice. Beside it,
# Meta's own view: the purchases and purchase value Meta reports for the campaign's ads.
ROAS_BY_CAMPAIGN = """
WITH first_touch AS (
    SELECT DISTINCT ON (l.customer_id)
           l.customer_id, coalesce(l.campaign_id, a.campaign_id) AS campaign_id, l.created_time
    FROM leads l LEFT JOIN ads a ON a.id = l.ad_id
    WHERE l.customer_id IS NOT NULL AND coalesce(l.campaign_id, a.campaign_id) IS NOT NULL
    ORDER BY l.customer_id, l.created_time NULLS LAST, l.id COLLATE "C"
), attributed AS (
    SELECT f.campaign_id, count(DISTINCT f.customer_id) AS customers, count(o.id) AS orders,
           coalesce(sum(o.amount), 0) AS revenue
    FROM first_touch f
    LEFT JOIN orders o
      ON o.customer_id = f.customer_id AND o.status = ANY(:statuses)
     AND (f.created_time IS NULL OR o.created_at >= f.created_time)
    GROUP BY f.campaign_id
), spend AS (
    SELECT campaign_id, sum(spend) AS spend, sum(purchases)::bigint AS purchases,
           sum(purchase_value) AS purchase_value
    FROM ad_insights_daily GROUP BY campaign_id
)
SELECT coalesce(a.campaign_id, s.campaign_id) AS campaign_id, c.name AS campaign_name,
       coalesce(a.customers, 0) AS attributed_customers,
       coalesce(a.orders, 0) AS attributed_orders,
       coalesce(a.revenue, 0) AS attributed_revenue,
       coalesce(s.spend, 0) AS spend,
       CASE WHEN a.customers > 0 AND s.spend > 0 THEN round(a.revenue / s.spend, 4) END AS roas,
       coalesce(s.purchases, 0) AS meta_purchases,
       coalesce(s.purchase_value, 0) AS meta_purchase_value,
       CASE WHEN s.spend > 0 THEN round(s.purchase_value / s.spend, 4) END AS meta_roas
FROM attributed a
FULL JOIN spend s ON s.campaign_id = a.campaign_id
LEFT JOIN campaigns c ON c.id = coalesce(a.campaign_id, s.campaign_id)
ORDER BY coalesce(a.campaign_id, s.campaign_id) COLLATE "C"
"""
FRESHNESS = """
SELECT (SELECT max(synced_at) FROM ad_insights_daily) AS ad_insights_synced_at,
       (SELECT max(created_time) FROM leads) AS leads_created_time,
       (SELECT max(created_at) FROM orders) AS orders_created_at,
       (SELECT max(changed_at) FROM change_log) AS change_log_changed_at
"""
