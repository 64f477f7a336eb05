"""`crm-pipeline dev`: the whole system on one machine, started and stopped together.

Starts, on embedded defaults unless configured otherwise:
- the embedded PostgreSQL (held by this process, so it stops when `dev` stops), migrated;
- with no Graph credentials, one Graph API emulator process shared by every run (its URL, ad
  accounts and Page in every child's environment, see `crm_pipeline.local_emulator`), and
  dev-only webhook credentials so signed test webhooks can be posted to the API;
- `dagster dev` (webserver + daemon: the hourly schedule and the change-log sensor run) on the
  instance in `DAGSTER_HOME`, or on the local one under `CRM_DATA_DIR/dagster`;
- the API service (`crm-pipeline serve`);
- the cache worker (`crm-pipeline cache-worker`): rebuilds a changed file within milliseconds
  of the commit and reports it to the same Dagster instance as a runless materialization, so
  the change-log sensor, seeing it alive, stays idle.

Each child runs in its own process group. One Ctrl-C (SIGINT) or SIGTERM asks every child to
shut down, waits for them, then kills whatever is left of each group and any process still
carrying this session's marker variable, so no process outlives the command.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from crm_pipeline.atomic import write_bytes_atomic
from crm_pipeline.config import (
    DEV_APP_SECRET,
    DEV_VERIFY_TOKEN,
    EMULATOR,
    ConfigError,
    Settings,
    load_settings,
    redact_url,
)
from crm_pipeline.db import migrate
from crm_pipeline.db.demo_mark import claim_for_demo
from crm_pipeline.db.engine import get_engine, resolve_database_url
from crm_pipeline.local_emulator import emulator_for
from crm_pipeline.orchestrate import instance_home
from crm_pipeline.processes import stop_processes_with_env

SHUTDOWN_TIMEOUT_SECONDS = 30.0
# Set in every child's environment: after shutdown, anything still carrying it is ours.
SESSION_VARIABLE = "CRM_DEV_SESSION"


@dataclass
class Child:
    """A started service: its name, process (leader of its own group) and where it is (a URL,
    or for the worker what it does)."""

    name: str
    process: subprocess.Popen
    where: str


def _bin(name: str) -> str:
    """A console script installed next to this interpreter (the venv's), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


@contextmanager
def _emulator_env(settings: Settings) -> Iterator[dict[str, str]]:
    """With no Meta token (or `FB_GRAPH_URL=emulator`): one emulator process for the session,
    and the children's environment asking for it explicitly (`FB_GRAPH_URL=emulator`, its URL,
    and the ad accounts and Page it lists)."""
    if settings.access_token is not None and not settings.uses_emulator:
        yield {}
        return
    # Asked for explicitly, `CRM_EMULATOR_URL` may name a running one; else one of our own.
    with emulator_for(settings, own=not settings.uses_emulator) as emulator:
        env = {
            "FB_GRAPH_URL": EMULATOR,
            "CRM_EMULATOR_URL": emulator.url,
            "FB_AD_ACCOUNT_IDS": ",".join(emulator.ad_account_ids),
            "FB_PAGE_ID": emulator.page_id or "",
        }
        if settings.app_secret is None:
            env["FB_APP_SECRET"] = DEV_APP_SECRET
        if settings.webhook_verify_token is None:
            env["FB_WEBHOOK_VERIFY_TOKEN"] = DEV_VERIFY_TOKEN
        yield env


def _start(name: str, argv: list[str], env: dict[str, str], where: str) -> Child:
    # Own session: a terminal's Ctrl-C reaches only us, and we stop each group in order.
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    return Child(name, process, where)


def stop_children(children: list[Child], timeout: float = SHUTDOWN_TIMEOUT_SECONDS) -> None:
    """SIGTERM each child (dagster dev treats it as Ctrl-C), wait, then SIGKILL each group."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"crm-pipeline dev: {child.name} did not stop in time; killing it", flush=True)
    for child in children:
        # Whatever is left in the group (a code server, a run worker) goes too.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()


DEV_KEY_NAME = "dev-local"


def dev_api_key(url: str, data_dir: Path) -> tuple[str, Path]:
    """The local all-scopes key of `dev`: reused from `data_dir` while active, else a new one.

    Only a hash is in the database, so the key itself is kept in an owner-only file beside the
    embedded database, for the next `dev` to print again.
    """
    from crm_pipeline.db.api_keys import SCOPES, create_key, hash_key, revoke_key

    path = data_dir / "dev-api-key"
    with get_engine(url).begin() as conn:
        if path.exists():
            key = path.read_text().strip()
            active = conn.execute(
                text("SELECT scopes FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
                {"h": hash_key(key)},
            ).scalar()
            if active is not None and set(SCOPES) <= set(active):
                return key, path
        revoke_key(conn, DEV_KEY_NAME)
        key = create_key(conn, DEV_KEY_NAME, SCOPES)
    write_bytes_atomic(path, (key + "\n").encode(), mode=0o600)
    return key, path


def run_dev(host: str = "127.0.0.1", dagster_port: int = 3000, api_port: int = 8000) -> int:
    """Run everything until interrupted or until a service dies; 0 on a clean Ctrl-C."""
    settings = load_settings()
    if settings.production:
        raise ConfigError("CRM_ENV=production: `dev` is for development and does not run")
    url = resolve_database_url(settings)
    revision = migrate.upgrade(url)
    api_key = dev_api_key(url, settings.data_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    children: list[Child] = []
    with ExitStack() as stack:
        emulator_env = stack.enter_context(_emulator_env(settings))
        if emulator_env:  # fake data only into a database made for it
            with get_engine(url).begin() as conn:
                claim_for_demo(conn)
        home = instance_home(settings)
        env = {
            **os.environ,
            **emulator_env,
            # Children connect to the server we started; they never start their own.
            "CRM_DATABASE_URL": url,
            "CRM_CACHE_DIR": str(settings.cache_dir.resolve()),
            **({"CRM_CACHE_URL": _cache_location(settings)} if settings.cache.url else {}),
            "CRM_DATA_DIR": str(settings.data_dir.resolve()),
            "DAGSTER_HOME": str(home),
            SESSION_VARIABLE: uuid.uuid4().hex,
        }
        try:
            children += _start_services(settings, host, dagster_port, api_port, env)
            _print_banner(settings, url, revision, home, emulator_env, children, api_key)
            return _watch(children, stop)
        finally:
            stop_children(children)
            # Code servers run in sessions of their own: sweep by our session marker too.
            stop_processes_with_env(SESSION_VARIABLE, env[SESSION_VARIABLE])


def _start_services(
    settings: Settings, host: str, dagster_port: int, api_port: int, env: dict[str, str]
) -> list[Child]:
    """`dagster dev`, the API and the cache worker, each in a session of its own."""
    dagster_log = ["--log-format", "json"] if settings.log_format == "json" else []
    dagster = _start(
        "dagster",
        [_bin("dagster"), "dev", "-m", "crm_pipeline.definitions", "-a", "defs"]
        + ["-h", host, "-p", str(dagster_port), *dagster_log],
        env,
        f"http://{host}:{dagster_port}",
    )
    children = [dagster]
    try:
        children.append(
            _start(
                "api",
                [_bin("crm-pipeline"), "serve", "--host", host, "--port", str(api_port)],
                env,
                f"http://{host}:{api_port}",
            )
        )
        children.append(
            _start(
                "cache worker",
                [_bin("crm-pipeline"), "cache-worker"],
                env,
                f"{settings.worker.name!r}: rebuilds changed files in "
                f"{_cache_location(settings)} within ms; shown in the Dagster UI",
            )
        )
    except BaseException:
        stop_children(children)
        raise
    return children


def _cache_location(settings) -> str:
    """Where the cache files are, as every child sees it: an s3:// URL or an absolute folder."""
    if "://" in settings.cache_location:
        return settings.cache_location
    return str(Path(settings.cache_location).resolve())


def _watch(children: list[Child], stop: threading.Event) -> int:
    """Wait for a Ctrl-C or SIGTERM (0), or for a service to die (1)."""
    while not stop.wait(0.5):
        dead = [c for c in children if c.process.poll() is not None]
        if dead:
            print(
                f"crm-pipeline dev: {dead[0].name} exited with code "
                f"{dead[0].process.returncode}; stopping the rest",
                file=sys.stderr,
                flush=True,
            )
            return 1
    print("crm-pipeline dev: stopping…", flush=True)
    return 0


def _print_banner(settings, url, revision, home, emulator_env, children, api_key) -> None:
    graph = (
        f"emulator at {emulator_env['CRM_EMULATOR_URL']} (no FB_ACCESS_TOKEN set): ad accounts "
        f"{emulator_env['FB_AD_ACCOUNT_IDS']}, Page {emulator_env['FB_PAGE_ID']}"
        if emulator_env
        else "as configured (FB_GRAPH_URL / FB_ACCESS_TOKEN)"
    )
    services = "\n".join(f"  {c.name:<16}{c.where}" for c in children)
    api = next(c for c in children if c.name == "api")
    print(
        f"""crm-pipeline dev
  database        {redact_url(url)} (migrated to {revision})
  dagster home    {home}
  graph api       {graph}
  cache files     {_cache_location(settings)}
{services}
  api key         {api_key[0]}
                  (all scopes, local to this data folder; kept in {api_key[1]})
                  curl -H "Authorization: Bearer $(cat {api_key[1]})" \\
                       {api.where}/api/customers
Ctrl-C stops everything.""",
        flush=True,
    )
