"""B7's floor: the cheapest sensor-triggered run a Dagster instance can do.

A second code location, loaded next to ours by the same `dagster-daemon` on the same instance:
a sensor polls a trigger file at the same interval as our change-log sensor and requests a run
of a one-step asset that copies the trigger's value to an output file. Write -> file through
this is what any sensor-driven run costs on this instance (tick, queue, run worker start); our
write -> customer file cannot be faster, so it is the reference B7 compares against.
"""

import os
from pathlib import Path

import dagster as dg

TRIGGER = Path(os.environ.get("CRM_BENCH_FLOOR_TRIGGER", "/nonexistent/trigger"))
OUTPUT = Path(os.environ.get("CRM_BENCH_FLOOR_OUTPUT", "/nonexistent/output"))
INTERVAL = int(os.environ.get("CRM_CHANGE_SENSOR_INTERVAL", "5"))


class FloorConfig(dg.Config):
    value: str


@dg.asset
def floor_output(config: FloorConfig) -> None:
    """Write the trigger's value, atomically, where the benchmark polls for it."""
    tmp = OUTPUT.with_suffix(".tmp")
    tmp.write_text(config.value)
    os.replace(tmp, OUTPUT)


@dg.sensor(
    asset_selection=[floor_output],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def floor_sensor(context: dg.SensorEvaluationContext):
    """A new value in the trigger file becomes one run."""
    try:
        value = TRIGGER.read_text().strip()
    except FileNotFoundError:
        return dg.SkipReason("no trigger yet")
    if not value or value == context.cursor:
        return dg.SkipReason("no new value")
    context.update_cursor(value)
    return dg.RunRequest(
        run_key=value, run_config={"ops": {"floor_output": {"config": {"value": value}}}}
    )


# In-process like ours: the floor is the cheapest run, not one with an extra step process.
defs = dg.Definitions(
    assets=[floor_output], sensors=[floor_sensor], executor=dg.in_process_executor
)
