"""`defs` for a Celery deployment: the whole code location plus jobs whose steps run on Celery.

Load this module instead of `crm_pipeline.definitions` where dagster-celery is installed
(`dagster-celery worker start ... -i crm_pipeline.celery_definitions`, `dagster job execute
-m crm_pipeline.celery_definitions -a defs ...`; docs/deployment.md, "Celery"). It is a
superset: every asset, schedule and sensor of the main code location, with the same resources
and policies, so it can replace that code location. Only the jobs below leave the run process
for the workers; everything else still runs in process, as in `definitions.py`.

Importing it connects to nothing: the broker is only reached when a run of a Celery job starts,
with the URLs from `deploy/celery/run_config.yaml` (`CELERY_BROKER_URL`,
`CELERY_RESULT_BACKEND`).
"""

from __future__ import annotations

import dagster as dg
from dagster_celery import celery_executor

from crm_pipeline import definitions
from crm_pipeline.defs import groups
from crm_pipeline.defs.sync_schedules import GRAPH_TAGS, INSIGHT_ASSETS

# The attribution re-sync fans out: one insights step per asset over a range of account-days,
# then every cache file and the KPI summary built from what it loaded (and their checks), each
# a step a different worker may take.
attribution_resync_celery = dg.define_asset_job(
    "attribution_resync_celery",
    selection=(
        dg.AssetSelection.assets(*INSIGHT_ASSETS)
        | dg.AssetSelection.groups(groups.CACHE, groups.ANALYTICS)
    ),
    executor_def=celery_executor,
    tags=GRAPH_TAGS,
    description=(
        "The attribution re-sync of a range of account-days (run tags "
        "dagster/asset_partition_range_start/end), then the JSON cache files and "
        "analytics/summary.json, each step on a Celery worker (dagster-celery). Launch it with "
        "deploy/celery/run_config.yaml."
    ),
)

defs = dg.Definitions.merge(definitions.defs, dg.Definitions(jobs=[attribution_resync_celery]))
