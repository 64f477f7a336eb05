"""The cache worker (`crm-pipeline cache-worker`): rebuilds cache files within milliseconds of a
committed change.

It LISTENs on the change-log channel (`crm_pipeline.db.changelog.CHANNEL`), but treats a
notification only as a wake-up: what to rebuild always comes from `change_log`, read by the
snapshot-xmin rule, so nothing is lost to a dropped connection, a restart or a missed notice.
Its progress (`cache_worker_state`) tells the change-log sensor which windows are done.

- `progress`: the watermark bookkeeping (what is read, what is still owed).
- `batch`: one change window turned into rebuilt files (Dagster-free, like the registry).
- `loop`: the connection, the advisory lock (one active worker per name), wake-ups, heartbeats.
- `report`: runless materializations on the Dagster instance (the only module importing dagster).
- `service`: the process behind the CLI command (settings, signals).
"""
