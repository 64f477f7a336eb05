"""The change-log sensor: the reconciler behind the cache worker.

The cache worker (`crm-pipeline cache-worker`) keeps the cache files fresh within milliseconds
of a commit and records, in `cache_worker_state`, a watermark below which every change has
reached its files. This sensor covers whatever it has not:

- the window a tick processes starts at max(the sensor's cursor, the worker's watermark):
  changes below the watermark are done, and rebuilding them again would be a wasted run;
- while the worker's heartbeat is fresh, the sensor launches nothing and only moves its cursor
  up to the worker's watermark;
- when the heartbeat is older than `CRM_CACHE_WORKER_STALE_SECONDS`, or no worker ever ran,
  it turns the change rows past that point into one targeted run per tick, as it always did.

Both read `change_log` with the xid8 rule of `db/changelog.py`, so whichever of them covers a
window, no committed change is skipped (invariant 1 in docs/architecture.md).
"""

import json

import dagster as dg

from crm_pipeline.cache import registry
from crm_pipeline.cache.worker.batch import touches_every_customer
from crm_pipeline.config import load_settings
from crm_pipeline.db.changelog import changed_customers, read_change_window
from crm_pipeline.db.worker_state import WorkerState, read_worker_state
from crm_pipeline.defs.resources import PostgresResource

# Assets are named by the registry, not imported: the sensor depends on facts, not on modules.
# The targeted ones (360 files, index segments) take the changed customers' ids as run config.
_TARGETED = {dg.AssetKey(f.asset): f for f in registry.FILES if f.targeted}

# Which cache assets a change to each table makes stale: the registry's `reads`, inverted.
ASSETS_BY_ENTITY: dict[str, tuple[dg.AssetKey, ...]] = {
    table: tuple(dg.AssetKey(f.asset) for f in registry.stale_files([table]))
    for table in registry.SOURCE_TABLES
}

# Dagster needs the interval when the code location loads: it comes from the settings model.
SENSOR_INTERVAL_SECONDS = load_settings().sensors.change_interval_seconds
# Past this many changed customers in one tick, one full rebuild is cheaper than a long id list.
MAX_TARGETED_CUSTOMERS = load_settings().sensors.max_targeted_customers

# Run tag saying why the reconciler, not the worker, rebuilt a window.
RECONCILE_TAG = "crm/reconciled_because"


def later_watermark(a: str | None, b: str | None) -> str | None:
    """The later of two xid8 watermarks (decimal text); None stands for "from the start"."""
    if a is None or b is None:
        return a if b is None else b
    return a if int(a) >= int(b) else b


def _worker_summary(worker: WorkerState) -> str:
    return (
        f"cache worker {worker.name!r} (heartbeat {worker.heartbeat_age_seconds:.1f}s ago, "
        f"watermark {worker.watermark})"
    )


def _targets(conn, since: str | None, window, file: registry.CacheFile) -> list[int] | None:
    """The customers whose parts of targeted `file` the window makes stale; None for all (a
    TRUNCATE, a table every customer's part reads, or more than MAX_TARGETED_CUSTOMERS)."""
    ids, complete = changed_customers(conn, since, window.upto, MAX_TARGETED_CUSTOMERS, file.reads)
    # A table every customer's part reads (campaign names in the attribution) changed.
    complete = complete and not touches_every_customer(window, file)
    return sorted(ids) if complete else None


@dg.sensor(
    asset_selection=[dg.AssetKey(file.asset) for file in registry.FILES],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "The reconciler behind the cache worker. Reads change_log past an xid8 watermark that "
        "is safe under out-of-order commits, starting where the cache worker's watermark says "
        "its work ends. While the worker's heartbeat is fresh it launches nothing; when the "
        "worker is down it requests one run per tick of exactly the cache assets the changed "
        "tables feed, with the changed customers' ids so only their 360 files and customer "
        "index segments are rewritten."
    ),
)
def change_log_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """Turn the change rows no live cache worker has covered into one targeted run."""
    cursor = json.loads(context.cursor)["upto"] if context.cursor else None
    worker_settings = load_settings().worker
    with postgres.engine().connect() as conn:
        worker = read_worker_state(conn, worker_settings.name)
        done = worker.watermark if worker else None
        since = later_watermark(cursor, done)
        if worker is not None and worker.alive(worker_settings.heartbeat_stale_seconds):
            # The worker owns the hot path; what it has not reached yet it will, and should it
            # die first, its watermark says where the next tick starts.
            next_cursor = json.dumps({"upto": since}) if since is not None else context.cursor
            return dg.SensorResult(
                skip_reason=f"{_worker_summary(worker)} is alive and keeps the cache fresh",
                cursor=next_cursor,
            )
        window = read_change_window(conn, since)
        stale = {key for entity in window.entity_names for key in ASSETS_BY_ENTITY.get(entity, ())}
        ops = {}
        for key in sorted(stale & _TARGETED.keys(), key=lambda k: k.to_user_string()):
            target = _targets(conn, since, window, _TARGETED[key])
            if target == []:
                stale.discard(key)  # e.g. a lead not linked to any customer
            else:  # None: rebuild every file (or segment)
                ops[key.to_user_string()] = {"config": {"customer_ids": target}}
        run_config = {"ops": ops} if ops else {}
    # Never backwards, even should a watermark ever be ahead of this snapshot's bound.
    cursor = json.dumps({"upto": later_watermark(window.upto, since)})
    if not stale:
        return dg.SensorResult(skip_reason="no relevant changes", cursor=cursor)
    reason = f"{_worker_summary(worker)} is not alive" if worker else "no cache worker has run"
    changed = {e.entity: e.changes for e in window.entities}
    context.log.info(f"{reason}; reconciling changes in {since}..{window.upto}: {changed}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"change_log:{since}:{window.upto}",
                asset_selection=sorted(stale, key=lambda k: k.to_user_string()),
                run_config=run_config,
                tags={
                    "crm/change_window": f"{since}..{window.upto}",
                    RECONCILE_TAG: "worker down" if worker else "no worker",
                },
            )
        ],
        cursor=cursor,
    )
