"""The cache worker (`crm-pipeline cache-worker`): rebuilds cache files within milliseconds of a
committed change.

It LISTENs on the change-log channel (`crm_pipeline.db.changelog.CHANNEL`), but treats a
notification only as a wake-up: what to rebuild always comes from `change_log`, read by the
snapshot-xmin rule, so nothing is lost to a dropped connection, a restart or a missed notice.
Its progress (`cache_worker_state`) tells the change-log sensor which windows are done.

- `progress`: the watermark bookkeeping (what is read, what is still owed).
- `batch`: one change window turned into rebuilt files (Dagster-free, like the registry).
- `loop`: the connection, the advisory lock (one active worker per name), wake-ups, heartbeats;
  a clean stop ages the heartbeat so the sensor takes over at once.

Dagster-free like the rest of `crm_pipeline.cache`: batches go to a `Reporter`, which the
process (`crm_pipeline.cache_worker`) wires to `crm_pipeline.defs.cache.worker_report`
(runless materializations on the Dagster instance).
"""
