"""Run the Graph API emulator in the foreground: ``python -m graph_emulator``.

Faults come from ``CRM_EMULATOR_FAULTS`` (a JSON list, see ``faults.py``); latency from
``--latency-ms`` or ``CRM_EMULATOR_LATENCY_MS``.
"""

from __future__ import annotations

import argparse
import sys
import threading

from graph_emulator.data import EmulatorData
from graph_emulator.faults import FaultPlan
from graph_emulator.server import GraphEmulator


def main(argv: list[str] | None = None) -> int:
    """Start the emulator on 127.0.0.1, print its URL and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m graph_emulator",
        description="Serve seeded fake Meta marketing data in the Graph API wire format.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: ephemeral)")
    parser.add_argument("--seed", type=int, default=7, help="data seed (default: 7)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="delay every answer by this many milliseconds (default: CRM_EMULATOR_LATENCY_MS or 0)",
    )
    parser.add_argument(
        "--async-polls",
        type=int,
        default=2,
        help="status polls until a report run completes (default: 2)",
    )
    args = parser.parse_args(argv)
    if args.latency_ms is not None and args.latency_ms < 0:
        parser.error("--latency-ms must not be negative")

    try:
        faults = FaultPlan.from_env()
        emulator = GraphEmulator(
            EmulatorData(seed=args.seed),
            port=args.port,
            faults=faults,
            latency_ms=args.latency_ms,
            async_polls_to_complete=args.async_polls,
        ).start()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(emulator.url, flush=True)
    try:
        # Event.wait() without a timeout is interruptible by Ctrl-C on every platform we support.
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
