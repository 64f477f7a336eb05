"""The Graph API emulator as a local child process, and what it serves, learned over HTTP.

The product never imports the emulator (an import-linter contract, see docs/architecture.md): it
runs `python -m graph_emulator` as a child process in a session of its own, reads the one ready
line the module prints, and asks it for its ad accounts and Page the way any client asks Meta
(`GET /me/adaccounts`, `GET /me/accounts`). The child stops when the block that started it
ends, and by itself if this process dies (it watches its stdin, a pipe only we hold).

Who starts one: `crm-pipeline demo` (always its own), `crm-pipeline dev` and
`crm-pipeline emulator -- COMMAND` (one for the whole session, its URL in `CRM_EMULATOR_URL`),
a command run with `FB_GRAPH_URL=emulator` and no `CRM_EMULATOR_URL`, and a Graph session of a
Dagster run in that situation. Each sets the URL, accounts and Page in the environment before
the definitions are loaded, so loading them never starts or asks an emulator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

import requests

from crm_pipeline.config import ConfigError, Settings, ask_for_emulator_in_this_process
from crm_pipeline.facebook.ids import sdk_api_version

__all__ = [
    "EMULATOR_MISSING",
    "EMULATOR_MODULE",
    "LocalEmulator",
    "discover",
    "emulator_for",
    "emulator_in_this_process",
    "emulator_installed",
    "emulator_process",
]

EMULATOR_MODULE = "graph_emulator"
EMULATOR_MISSING = (
    "FB_GRAPH_URL=emulator needs the graph-emulator package: "
    "`make install` or `pip install -e ./emulator`"
)
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 10.0
# The emulator accepts any token; this one says where it came from, and Meta's never goes there.
DISCOVERY_TOKEN = "crm-pipeline-local-emulator"


@dataclass(frozen=True)
class LocalEmulator:
    """A running emulator: its base URL and the ad accounts and Page its token can see."""

    url: str
    ad_account_ids: tuple[str, ...]
    page_id: str | None


@contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """Run `python -m graph_emulator --host 127.0.0.1 --port 0 *args`; yield its URL.

    Raises ConfigError when the package is not installed or the emulator does not start.
    """
    if not emulator_installed():
        raise ConfigError(EMULATOR_MISSING)
    command = [sys.executable, "-m", EMULATOR_MODULE, "--host", "127.0.0.1", "--port", "0"]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*command, "--stop-on-eof", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop it in order.
            start_new_session=True,
        )
        try:
            yield _ready_url(process, errors)
        finally:
            _stop(process)


def discover(url: str, api_version: str | None = None) -> LocalEmulator:
    """Ask the emulator at `url` for its ad accounts and Page, as a client asks Meta."""
    base = url.rstrip("/")
    # The version the syncs will use: FB_API_VERSION, else the SDK's own (as GraphClient does).
    version = api_version or sdk_api_version()
    with requests.Session() as session:
        session.trust_env = False  # no proxies: the emulator is local
        accounts = _all_pages(session, f"{base}/{version}/me/adaccounts", "id,account_id")
        pages = _all_pages(session, f"{base}/{version}/me/accounts", "id,name")
    return LocalEmulator(
        base, tuple(account["id"] for account in accounts), pages[0]["id"] if pages else None
    )


@contextmanager
def emulator_for(settings: Settings, *, own: bool = False) -> Iterator[LocalEmulator]:
    """The emulator at `CRM_EMULATOR_URL`, else (or with `own`) a private child process for as
    long as the block runs; with the accounts and Page to sync.

    `FB_AD_ACCOUNT_IDS` and `FB_PAGE_ID`, when set, narrow what is synced, as against Meta;
    what is not set is asked from the emulator (nothing is asked when everything is set).
    """
    given = LocalEmulator(settings.emulator_url or "", settings.ad_account_ids, settings.page_id)
    if own:
        given = LocalEmulator("", (), None)  # an emulator of its own, and all it serves
    elif all((given.url, given.ad_account_ids, given.page_id)):
        yield given
        return
    with ExitStack() as stack:
        url = given.url or stack.enter_context(emulator_process())
        found = discover(url, settings.api_version)
        yield LocalEmulator(
            found.url, given.ad_account_ids or found.ad_account_ids, given.page_id or found.page_id
        )


@contextmanager
def emulator_in_this_process(
    settings: Settings, *, demo: bool = False
) -> Iterator[LocalEmulator | None]:
    """With `FB_GRAPH_URL=emulator` (or for the demo): an emulator for this command, its URL,
    ad accounts and Page set in this process's environment, so in every child's too.

    Call it before the definitions are imported: their partitions are these accounts. The demo
    always runs its own emulator and takes everything it serves. Yields None when the settings
    do not ask for the emulator.
    """
    if not (demo or settings.uses_emulator):
        yield None
        return
    with emulator_for(settings, own=demo) as emulator:
        ask_for_emulator_in_this_process(emulator.url, emulator.ad_account_ids, emulator.page_id)
        yield emulator


def emulator_installed() -> bool:
    """Whether `python -m graph_emulator` can run here (the graph-emulator package is there)."""
    try:
        return importlib.util.find_spec(EMULATOR_MODULE) is not None
    except ImportError:  # an import hook that refuses it, as a missing package would
        return False


def _ready_url(process: subprocess.Popen, errors) -> str:
    """The URL of the emulator's ready line; ConfigError when it exits or stays silent."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=READY_TIMEOUT_SECONDS)
        return json.loads(line)["url"]
    except (queue.Empty, ValueError, KeyError, TypeError):
        process.poll()
        errors.seek(0)
        problem = errors.read().decode(errors="replace").strip().splitlines()
        if any(f"No module named {EMULATOR_MODULE}" in line for line in problem):
            raise ConfigError(EMULATOR_MISSING) from None
        last = problem[-1] if problem else f"no ready line in {READY_TIMEOUT_SECONDS:g} s"
        raise ConfigError(f"the Graph API emulator did not start: {last}") from None


def _stop(process: subprocess.Popen) -> None:
    """Close its stdin (it stops at end of file), then SIGTERM, then SIGKILL its group."""
    with suppress(OSError):
        process.stdin.close()
    for signum in (None, signal.SIGTERM, signal.SIGKILL):
        if signum is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    process.stdout.close()


def _all_pages(session: requests.Session, url: str, fields: str) -> list[dict]:
    """Every item of a cursor-paged Graph edge, following `paging.next`."""
    items: list[dict] = []
    params: dict | None = {"fields": fields, "access_token": DISCOVERY_TOKEN}
    next_url: str | None = url
    while next_url:
        try:
            response = session.get(next_url, params=params, timeout=HTTP_TIMEOUT_SECONDS)
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise ConfigError(f"the Graph API emulator at {url} does not answer: {error}") from None
        if response.status_code != 200:
            message = body.get("error", {}).get("message", response.status_code)
            raise ConfigError(f"the Graph API emulator at {url} refused: {message}")
        items += body.get("data", [])
        next_url, params = body.get("paging", {}).get("next"), None  # `next` repeats them
    return items
