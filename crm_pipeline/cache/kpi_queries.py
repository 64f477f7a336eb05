"""The SQL behind summary.json. Aggregation happens in PostgreSQL, never row by row in Python.

Every query reads the KPI rollup tables (migration 0008; `db/rollups.py` says what each holds),
which triggers keep equal to the source tables in every writer's transaction: a summary reads
O(days x keys) rollup rows, never every order, lead or insight row, and the figures are those
the same queries over the source tables would give (the `rollups_match_sources` check and the
rollup tests hold them to it). The only source-table reads left are the newest order and lead
and change, each one index lookup. The column names are the field names of the models in
`summary_model.py` that the rows fill.

Parameters: `statuses` (the revenue statuses), `first_day`/`last_day` (the window's UTC days)
and `start`/`end` (the same window as a half-open timestamp range). A rollup's UTC day is in
the window exactly when its rows' timestamps are in [start, end).
"""

# Text ordering uses the "C" collation so that every list comes out in the same order whatever
# the server's locale (and in the same order as Python's `sorted`). Sums of counts are cast
# back to bigint: summed counts are numeric in PostgreSQL, the document's counts are integers.
# Rollup rows are always summed per key: other transactions see one total per key, but a
# writer's own uncommitted deltas are rows of their own (`schema._pending_txid`).

_IN_WINDOW = "day BETWEEN :first_day AND :last_day"

REVENUE_BY_CURRENCY = f"""
SELECT currency,
       sum(revenue) AS total,
       sum(orders)::bigint AS orders,
       coalesce(sum(revenue) FILTER (WHERE {_IN_WINDOW}), 0) AS last_30_days,
       coalesce(sum(orders) FILTER (WHERE {_IN_WINDOW}), 0)::bigint AS orders_last_30_days,
       round(sum(revenue) / sum(orders), 2) AS average_order_value
FROM rollup_orders_daily WHERE status = ANY(:statuses)
GROUP BY currency ORDER BY currency COLLATE "C"
"""
REVENUE_BY_MONTH = """
SELECT to_char(day, 'YYYY-MM') AS month, currency,
       sum(revenue) AS revenue, sum(orders)::bigint AS orders
FROM rollup_orders_daily WHERE status = ANY(:statuses)
GROUP BY 1, 2 ORDER BY 1, currency COLLATE "C"
"""
BY_TIER = """
SELECT t.tier, t.customers, coalesce(r.revenue, 0) AS revenue
FROM (
    SELECT tier, sum(customers)::bigint AS customers FROM rollup_customers_by_tier
    GROUP BY tier HAVING sum(customers) > 0
) t
LEFT JOIN (
    SELECT tier, sum(revenue) AS revenue FROM rollup_tier_revenue
    WHERE status = ANY(:statuses) GROUP BY tier
) r USING (tier)
ORDER BY t.tier COLLATE "C"
"""
# All-time figures from the per-campaign totals (a row per campaign with insights), the
# window's from its days' rows (a range of the daily rollup's key).
_WINDOW_INSIGHTS = "rollup_ad_insights_daily WHERE date BETWEEN :first_day AND :last_day"
AD_SPEND = f"""
SELECT coalesce(sum(spend), 0) AS total,
       (SELECT coalesce(sum(spend), 0) FROM {_WINDOW_INSIGHTS}) AS last_30_days,
       coalesce(sum(impressions), 0)::bigint AS impressions,
       coalesce(sum(clicks), 0)::bigint AS clicks,
       coalesce(sum(leads), 0)::bigint AS leads,
       (SELECT coalesce(sum(leads), 0) FROM {_WINDOW_INSIGHTS})::bigint AS leads_last_30_days,
       coalesce(sum(purchases), 0)::bigint AS purchases,
       coalesce(sum(purchase_value), 0) AS purchase_value,
       (SELECT min(date) FROM rollup_ad_insights_daily) AS first_date,
       (SELECT max(date) FROM rollup_ad_insights_daily) AS last_date
FROM rollup_ad_insights_by_campaign
"""
SPEND_BY_CAMPAIGN = f"""
SELECT i.campaign_id, c.name AS campaign_name,
       i.spend,
       coalesce(w.spend, 0) AS spend_last_30_days,
       i.impressions, i.clicks, i.leads,
       CASE WHEN i.leads > 0 THEN round(i.spend / i.leads, 2) END AS cost_per_lead
FROM rollup_ad_insights_by_campaign i
LEFT JOIN (
    SELECT campaign_id, sum(spend) AS spend FROM {_WINDOW_INSIGHTS} GROUP BY campaign_id
) w USING (campaign_id)
LEFT JOIN campaigns c ON c.id = i.campaign_id
ORDER BY i.spend DESC, i.campaign_id COLLATE "C"
"""
# All time from the per-source totals (they count leads without a created_time too), the
# window from the daily rows.
LEADS = f"""
SELECT coalesce(sum(leads), 0)::bigint AS total,
       coalesce(sum(leads) FILTER (WHERE source = 'facebook_lead_ads'), 0)::bigint AS lead_ads,
       (SELECT coalesce(sum(leads), 0) FROM rollup_leads_daily WHERE {_IN_WINDOW})::bigint
           AS last_30_days,
       (SELECT coalesce(sum(leads), 0) FROM rollup_leads_daily
        WHERE {_IN_WINDOW} AND source = 'facebook_lead_ads')::bigint AS lead_ads_last_30_days
FROM rollup_leads_by_source
"""
LEADS_BY_DAY = f"""
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') d
), per_day AS (
    SELECT day, sum(leads)::bigint AS leads
    FROM rollup_leads_daily WHERE {_IN_WINDOW}
    GROUP BY day
)
SELECT days.day AS date, coalesce(per_day.leads, 0) AS leads
FROM days LEFT JOIN per_day USING (day)
ORDER BY days.day
"""
SPEND_BY_DAY = f"""
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') d
), per_day AS (
    SELECT date AS day, sum(spend) AS spend, sum(leads)::bigint AS leads
    FROM {_WINDOW_INSIGHTS}
    GROUP BY date
)
SELECT days.day AS date, coalesce(per_day.spend, 0) AS spend, coalesce(per_day.leads, 0) AS leads
FROM days LEFT JOIN per_day USING (day)
ORDER BY days.day
"""
# First-touch attribution (`rollups.FIRST_TOUCH`): each customer belongs to the campaign of
# their earliest lead that names one (directly, or through the lead's ad), and brings the
# revenue of their orders placed at or after that lead. One campaign per customer, so no
# revenue is counted twice. The rollups hold the customers per campaign and those orders per
# campaign, currency and status. Beside it, Meta's own view: the purchases and purchase value
# Meta reports for the campaign's ads.
ROAS_BY_CAMPAIGN = """
WITH attributed AS (
    SELECT c.campaign_id, c.customers, coalesce(r.orders, 0) AS orders,
           coalesce(r.revenue, 0) AS revenue
    FROM (
        SELECT campaign_id, sum(customers)::bigint AS customers FROM rollup_attributed_customers
        GROUP BY campaign_id HAVING sum(customers) > 0
    ) c
    LEFT JOIN (
        SELECT campaign_id, sum(orders) AS orders, sum(revenue) AS revenue
        FROM rollup_attributed_revenue WHERE status = ANY(:statuses) GROUP BY campaign_id
    ) r USING (campaign_id)
), spend AS (
    SELECT campaign_id, spend, purchases, purchase_value FROM rollup_ad_insights_by_campaign
)
SELECT coalesce(a.campaign_id, s.campaign_id) AS campaign_id, c.name AS campaign_name,
       coalesce(a.customers, 0) AS attributed_customers,
       coalesce(a.orders, 0)::bigint AS attributed_orders,
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
# max() over an indexed column is one index lookup (orders.created_at: migration 0008).
FRESHNESS = """
SELECT (SELECT max(synced_at) FROM rollup_ad_insights_by_campaign) AS ad_insights_synced_at,
       (SELECT max(created_time) FROM leads) AS leads_created_time,
       (SELECT max(created_at) FROM orders) AS orders_created_at,
       (SELECT max(changed_at) FROM change_log) AS change_log_changed_at
"""
