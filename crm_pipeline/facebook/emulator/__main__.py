"""Run the Graph API emulator in the foreground: ``python -m crm_pipeline.facebook.emulator``."""

from __future__ import annotations

import argparse
import threading

from crm_pipeline.facebook.emulator.data import EmulatorData
from crm_pipeline.facebook.emulator.server import GraphEmulator


def main(argv: list[str] | None = None) -> int:
    """Start the emulator on 127.0.0.1, print its URL and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m crm_pipeline.facebook.emulator",
        description="Serve seeded fake Meta marketing data in the Graph API wire format.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: ephemeral)")
    parser.add_argument("--seed", type=int, default=7, help="data seed (default: 7)")
    args = parser.parse_args(argv)

    emulator = GraphEmulator(EmulatorData(seed=args.seed), port=args.port).start()
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
