"""Run the Graph API emulator in the foreground: ``python -m graph_emulator``.

Once it listens it prints one line on stdout, a JSON object with its URL::

    {"ready": true, "url": "http://127.0.0.1:54321", "pid": 4242}

and serves until SIGINT (Ctrl-C) or SIGTERM, or with ``--stop-on-eof`` until its stdin closes (a
parent holding the pipe stops it by closing it, or by dying). Faults come from
``CRM_EMULATOR_FAULTS`` (a JSON list, see ``faults.py``); latency from ``--latency-ms`` or
``CRM_EMULATOR_LATENCY_MS``. Clients learn its ad accounts and Page as from Meta:
``GET /vX.Y/me/adaccounts`` and ``GET /vX.Y/me/accounts``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from graph_emulator.data import EmulatorData
from graph_emulator.faults import FaultPlan
from graph_emulator.server import GraphEmulator


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m graph_emulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m graph_emulator",
        description="Serve seeded fake Meta marketing data in the Graph API wire format.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
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
    parser.add_argument(
        "--stop-on-eof", action="store_true", help="also stop when stdin reaches end of file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the emulator, print its ready line and serve until told to stop."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency_ms is not None and args.latency_ms < 0:
        parser.error("--latency-ms must not be negative")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        emulator = GraphEmulator(
            EmulatorData(seed=args.seed),
            host=args.host,
            port=args.port,
            faults=FaultPlan.from_env(),
            latency_ms=args.latency_ms,
            async_polls_to_complete=args.async_polls,
        ).start()
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.stop_on_eof:
        threading.Thread(target=_stop_at_eof, args=(stop,), daemon=True).start()
    try:
        print(json.dumps({"ready": True, "url": emulator.url, "pid": os.getpid()}), flush=True)
        stop.wait()
    finally:
        emulator.stop()
    return 0


def _stop_at_eof(stop: threading.Event) -> None:
    sys.stdin.buffer.read()  # returns at end of file
    stop.set()


if __name__ == "__main__":
    raise SystemExit(main())
