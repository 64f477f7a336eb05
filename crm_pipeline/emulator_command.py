"""`crm-pipeline emulator`: the Graph API emulator as a process, alone or around a command.

Alone, the command becomes `python -m graph_emulator` (exec: its ready line, signals and exit
code are the emulator's own). With `-- COMMAND ...` it starts the emulator, learns its ad
accounts and Page over HTTP, runs COMMAND with `FB_GRAPH_URL=emulator`, `CRM_EMULATOR_URL`,
`FB_AD_ACCOUNT_IDS` and `FB_PAGE_ID` set (Meta's token dropped), and stops the emulator when
COMMAND exits: `make ui` runs `dagster dev` this way, so its code location's partitions are the
emulator's accounts and its runs use that one emulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from crm_pipeline.config import ConfigError, ask_for_emulator_in_this_process, load_settings
from crm_pipeline.local_emulator import (
    EMULATOR_MISSING,
    EMULATOR_MODULE,
    discover,
    emulator_installed,
    emulator_process,
)

__all__ = ["run_emulator"]

COMMAND_NOT_FOUND = 127  # what a shell answers for a command it cannot find


def run_emulator(emulator_args: list[str], command: list[str]) -> int:
    """Serve in the foreground (no `command`), or run `command` against a private emulator.

    `emulator_args` go to `python -m graph_emulator` (`--port`, `--seed`, ...).
    """
    if not command:
        if not emulator_installed():
            raise ConfigError(EMULATOR_MISSING)
        argv = [sys.executable, "-m", EMULATOR_MODULE, "--host", "127.0.0.1", *emulator_args]
        sys.stdout.flush()
        os.execv(sys.executable, argv)
    settings = load_settings()
    if settings.production:
        raise ConfigError("CRM_ENV=production: the emulator serves fake data and does not run")
    with emulator_process(*emulator_args) as url:
        emulator = discover(url, settings.api_version)
        ask_for_emulator_in_this_process(emulator.url, emulator.ad_account_ids, emulator.page_id)
        print(
            f"crm-pipeline emulator: {emulator.url} serves ad accounts "
            f"{','.join(emulator.ad_account_ids)} and Page {emulator.page_id}; "
            f"running {command[0]} against it",
            file=sys.stderr,
            flush=True,
        )
        return _run(command)


def _run(command: list[str]) -> int:
    """Run `command` (it inherits our environment) until it exits; its exit code."""
    try:
        process = subprocess.Popen(command)
    except FileNotFoundError:
        print(f"crm-pipeline emulator: {command[0]}: command not found", file=sys.stderr)
        return COMMAND_NOT_FOUND
    # A terminal's Ctrl-C reaches the command too (one process group): it stops on its own,
    # then we stop the emulator. A SIGTERM sent to us alone is passed on.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: process.terminate()),
    }
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
