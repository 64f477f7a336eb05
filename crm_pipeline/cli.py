"""`crm-pipeline`: the command-line entry point."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from crm_pipeline.config import ConfigError, load_settings
from crm_pipeline.logs import configure_logging


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _db_upgrade(args: argparse.Namespace) -> int:
    from crm_pipeline.config import redact_url
    from crm_pipeline.db import migrate
    from crm_pipeline.db.engine import resolve_database_url

    settings = load_settings()
    settings.require_production_ready("db upgrade")
    url = resolve_database_url(settings)
    revision = migrate.upgrade(url, args.revision)
    print(f"{redact_url(url)} is at revision {revision}")
    return 0


def _db_prune_changes(args: argparse.Namespace) -> int:
    from crm_pipeline.db.changelog import prune_change_log
    from crm_pipeline.db.engine import get_engine, resolve_database_url

    with get_engine(resolve_database_url(load_settings())).begin() as conn:
        removed = prune_change_log(conn, args.older_than_days)
    print(f"removed {removed} change_log rows older than {args.older_than_days} days")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from crm_pipeline.demo import run_demo

    return run_demo(days=args.days)


def _sync_facebook(args: argparse.Namespace) -> int:
    from crm_pipeline.local_emulator import emulator_in_this_process

    settings = load_settings()
    settings.require_production_ready("sync")
    settings.require_graph_credentials()  # before anything is written
    # With FB_GRAPH_URL=emulator, its URL, accounts and Page are in the environment before the
    # definitions (whose partitions they are) are imported.
    with emulator_in_this_process(settings):
        return _sync_days(args, load_settings())


def _sync_days(args: argparse.Namespace, settings) -> int:
    from crm_pipeline import orchestrate
    from crm_pipeline.db import migrate
    from crm_pipeline.db.engine import resolve_database_url
    from crm_pipeline.progress import Progress

    days = orchestrate.days_between(args.since, args.until)
    url = resolve_database_url(settings)
    migrate.upgrade(url)
    instance = orchestrate.local_instance(settings)
    with (
        orchestrate.graph_resource(settings) as graph_api,
        Progress("sync", unit="account-days") as progress,  # on stderr; stdout says the result
    ):
        report = orchestrate.sync_facebook(
            days,
            resources=orchestrate.standard_resources(settings, graph_api),
            instance=instance,
            database_url=url,
            refresh_caches=not args.no_cache,
            progress=progress,
        )
    resumed = f", resumed past {report.resumed} finished account-days" if report.resumed else ""
    print(
        f"synced {len(days)} day(s) {days[0]}..{days[-1]}: {report.insight_rows} insight rows "
        f"({report.inserted} inserted, {report.updated} updated) in {report.api_calls} API calls"
        f"{resumed}"
    )
    for name, path in report.cache_files.items():
        print(f"  {name}: {path}")
    return 0


def _clone_db(args: argparse.Namespace) -> int:
    from crm_pipeline.db.clone import clone_database
    from crm_pipeline.db.engine import resolve_database_url

    settings = load_settings()
    settings.require_production_ready("clone-db")
    source = resolve_database_url(settings)
    result = clone_database(source, args.to, mask_pii=args.mask_pii)
    print(f"cloned to {result.target}")
    print(result.format_table())
    return 0


def _privacy_erase(args: argparse.Namespace) -> int:
    import getpass

    from crm_pipeline.cache.stores import store_from_settings
    from crm_pipeline.db import migrate
    from crm_pipeline.db.engine import get_engine, resolve_database_url
    from crm_pipeline.erasure import erase_person
    from crm_pipeline.progress import Progress

    settings = load_settings()
    settings.require_production_ready("privacy erase")
    url = resolve_database_url(settings)
    migrate.require_migrated(url)
    selector, value = next(
        (name, getattr(args, name))
        for name in ("customer_id", "email", "phone", "psid")
        if getattr(args, name) is not None
    )
    with Progress("erase", unit="steps") as progress:
        result = erase_person(
            get_engine(url),
            selector,
            value,
            actor=args.actor or f"cli:{getpass.getuser()}",
            data_dir=settings.data_dir,
            cache_dir=store_from_settings(settings),
            dry_run=args.dry_run,
            allow_multiple_customers=args.allow_multiple_customers,
            progress=progress,
        )
    if selector == "customer_id" and not result.found:
        print("crm-pipeline: no customer with that id; nothing erased", file=sys.stderr)
        return 1
    verb = "would erase (dry run, nothing changed)" if args.dry_run else "erased"
    where = "" if result.found else " (no database row was about them; their identifier is"
    where += ")" if result.found else " remembered so later syncs drop it)"
    print(f"{verb} the person with that {selector.replace('_', ' ')}{where}")
    for name, count in result.counts().items():
        print(f"  {name:<32} {count}")
    if result.erasure_id is not None:
        print(f"recorded as erasure {result.erasure_id}")
    return 0


def _key_connection():
    from crm_pipeline.db import migrate
    from crm_pipeline.db.engine import get_engine, resolve_database_url

    url = resolve_database_url(load_settings())
    migrate.require_migrated(url)
    return get_engine(url).begin()


def _api_keys_create(args: argparse.Namespace) -> int:
    from crm_pipeline.db.api_keys import create_key

    with _key_connection() as conn:
        key = create_key(conn, args.name, args.scopes)
    print(f"created API key {args.name!r} with scopes {args.scopes}")
    print("the key is shown once; store it now (clients send `Authorization: Bearer <key>`):")
    print(key)
    return 0


def _api_keys_list(args: argparse.Namespace) -> int:
    from crm_pipeline.db.api_keys import list_keys

    with _key_connection() as conn:
        keys = list_keys(conn)
    if not keys:
        print("no API keys; create one with `crm-pipeline api-keys create --name N --scopes S`")
        return 0

    def when(value) -> str:
        return value.isoformat(timespec="seconds") if value else "-"

    print(f"{'name':24} {'prefix':10} {'status':8} {'created':25} {'last used':25} scopes")
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        print(
            f"{k.name:24} {k.key_prefix:10} {status:8} {when(k.created_at):25} "
            f"{when(k.last_used_at):25} {','.join(k.scopes)}"
        )
    return 0


def _api_keys_revoke(args: argparse.Namespace) -> int:
    from crm_pipeline.db.api_keys import revoke_key

    with _key_connection() as conn:
        revoked = revoke_key(conn, args.name)
    if not revoked:
        print(f"crm-pipeline: no active API key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked API key {args.name!r}; running API processes refuse it within a second")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from crm_pipeline.config import ConfigError
    from crm_pipeline.facebook.custom_insights import CustomInsightsError, load_custom_insights

    try:
        settings = load_settings()
        # The file is read as the code location reads it: a wrong entry is caught here too.
        custom = load_custom_insights(settings.graph.custom_insights)
    except (ConfigError, CustomInsightsError) as exc:
        print(f"crm-pipeline: configuration error: {exc}", file=sys.stderr)
        return 2
    width = max(len(variable) for variable, _ in settings.describe())
    print(f"effective configuration (CRM_ENV={settings.env}; secrets masked):")
    for variable, shown in settings.describe():
        print(f"  {variable:<{width}}  {shown}")
    if custom:
        print(f"custom insights: {', '.join(entry.table for entry in custom)}")
    problems = settings.production_problems() if settings.production else []
    notes = []
    if not settings.production and settings.missing_graph_credentials():
        notes.append(
            f"{', '.join(settings.missing_graph_credentials())} unset: `sync` refuses to run "
            "(set them, or FB_GRAPH_URL=emulator for demo data)"
        )
    keys = _active_key_count(settings)
    if keys == 0:
        notes.append(
            "no active API key: every /api/ route answers 401 (crm-pipeline api-keys create)"
        )
    for note in notes:
        print(f"warning: {note}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"crm-pipeline: {len(problems)} problem(s) for CRM_ENV=production", file=sys.stderr)
        return 1
    print("configuration ok")
    return 0


def _active_key_count(settings) -> int | None:
    """Active API keys in the configured database; None when it cannot be asked."""
    if settings.database_url is None:
        return None  # never start an embedded server just to look
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(
            settings.database_url, connect_args={"connect_timeout": 3}, hide_parameters=True
        )
        try:
            with engine.connect() as conn:
                return conn.execute(
                    text("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
                ).scalar_one()
        finally:
            engine.dispose()
    except Exception:  # unreachable or not migrated: `config check` reports only settings
        return None


def _serve(args: argparse.Namespace) -> int:
    from crm_pipeline.api.server import serve

    load_settings().require_production_ready("serve")

    serve(args.host, args.port, log_level=args.log_level)
    return 0


def _cache_worker(args: argparse.Namespace) -> int:
    from crm_pipeline.cache_worker import run_cache_worker

    configure_logging("INFO")  # a long-running service: say when it is active or standing by
    return run_cache_worker(load_settings(), report=not args.no_report)


def _status(args: argparse.Namespace) -> int:
    from crm_pipeline.status import run_status

    return run_status(load_settings(), as_json=args.json)


def _dev(args: argparse.Namespace) -> int:
    from crm_pipeline.dev import run_dev

    return run_dev(args.host, args.dagster_port, args.api_port)


def _emulator(args: argparse.Namespace) -> int:
    from crm_pipeline.emulator_command import run_emulator

    command = args.run[1:] if args.run[:1] == ["--"] else args.run
    return run_emulator(["--port", str(args.port), "--seed", str(args.seed)], command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="crm-pipeline", description="Meta marketing data -> PostgreSQL -> JSON cache."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_db, _add_sync, _add_api_keys, _add_privacy, _add_services, _add_local):
        add(sub)
    return parser


def _add_db(sub) -> None:
    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db", required=True)
    up = db.add_parser("upgrade", help="run the Alembic migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_db_upgrade)
    prune = db.add_parser("prune-changes", help="delete change_log rows the sensor consumed")
    prune.add_argument("--older-than-days", type=int, default=7)
    prune.set_defaults(func=_db_prune_changes)

    clone = sub.add_parser(
        "clone-db", help="copy a consistent snapshot of the database to PostgreSQL or Parquet"
    )
    clone.add_argument(
        "--to",
        required=True,
        metavar="TARGET",
        help="a postgresql:// URL of an empty database, or a folder (must not exist or be empty)",
    )
    clone.add_argument(
        "--mask-pii",
        action="store_true",
        help="replace every personal value (names, emails, phones, PSIDs, message text, lead"
        " answers, webhook payloads) with keyed hashes (set CRM_MASK_KEY)",
    )
    clone.set_defaults(func=_clone_db)

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="config", required=True
    )
    config.add_parser(
        "check",
        help="print the effective configuration (secrets masked); non-zero on any problem",
    ).set_defaults(func=_config_check)


def _add_privacy(sub) -> None:
    privacy = sub.add_parser("privacy", help="personal data: erasure on request")
    erase = privacy.add_subparsers(dest="privacy", required=True).add_parser(
        "erase",
        help="erase one person from the database, the raw lake and the cache; record it",
        description="Deletes the person's customer row (kept anonymised when orders reference"
        " it), leads, conversations, messages and webhook events; rewrites the raw Parquet files"
        " that hold them; rebuilds their cache files; keeps their identifiers only as keyed"
        " hashes (CRM_MASK_KEY) so later syncs drop them. See docs/privacy.md.",
    )
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-id", metavar="ID")
    who.add_argument("--email", metavar="E")
    who.add_argument("--phone", metavar="P")
    who.add_argument("--psid", metavar="S", help="a Messenger page-scoped id")
    erase.add_argument("--dry-run", action="store_true", help="show the counts; change nothing")
    erase.add_argument(
        "--allow-multiple-customers",
        action="store_true",
        help="erase even when the identifier reaches several customer rows",
    )
    erase.add_argument("--actor", help="who asked, for the record (default: cli:<user>)")
    erase.set_defaults(func=_privacy_erase)


def _add_sync(sub) -> None:
    sync = sub.add_parser("sync", help="run sync assets through Dagster")
    source = sync.add_subparsers(dest="source", required=True)
    fb = source.add_parser("facebook", help="Facebook insights for a date range, then caches")
    fb.add_argument("--since", type=_date, required=True, help="first day, YYYY-MM-DD")
    fb.add_argument("--until", type=_date, required=True, help="last day, YYYY-MM-DD")
    fb.add_argument("--no-cache", action="store_true", help="skip the cache rebuild")
    fb.set_defaults(func=_sync_facebook)


def _add_api_keys(sub) -> None:
    keys = sub.add_parser("api-keys", help="API keys: create (shown once), list, revoke")
    keys_sub = keys.add_subparsers(dest="api_keys", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: customers:read, analytics:read, crm:write, privacy:erase",
    )
    create.set_defaults(func=_api_keys_create)
    keys_sub.add_parser("list", help="every key (never the secret)").set_defaults(
        func=_api_keys_list
    )
    revoke = keys_sub.add_parser("revoke", help="revoke the active key with this name")
    revoke.add_argument("name")
    revoke.set_defaults(func=_api_keys_revoke)


def _add_services(sub) -> None:
    api = sub.add_parser("serve", help="run the API: webhooks, write routes, cache-first reads")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    api.set_defaults(func=_serve)

    worker = sub.add_parser(
        "cache-worker",
        help="rebuild cache files within milliseconds of each committed change (LISTEN/NOTIFY);"
        " Ctrl-C or SIGTERM stops it",
    )
    worker.add_argument(
        "--no-report",
        action="store_true",
        help="do not report batches to the Dagster instance (CRM_CACHE_WORKER_REPORT=false)",
    )
    worker.set_defaults(func=_cache_worker)

    status = sub.add_parser(
        "status",
        help="database, cache files, worker, syncs, webhooks and failing checks on one screen;"
        " exit 1 when something needs attention (README: Status)",
    )
    status.add_argument("--json", action="store_true", help="the status as a JSON document")
    status.set_defaults(func=_status)


def _add_local(sub) -> None:
    """The commands for one machine: the demo, `dev` and the emulator."""
    demo = sub.add_parser("demo", help="run the whole graph on embedded defaults")
    demo.add_argument("--days", type=int, default=7, help="days of insights to sync (default 7)")
    demo.set_defaults(func=_demo)

    dev = sub.add_parser(
        "dev",
        help="Dagster UI + daemon, the API, and the emulator when no credentials are set;"
        " Ctrl-C stops all",
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--dagster-port", type=int, default=3000)
    dev.add_argument("--api-port", type=int, default=8000)
    dev.set_defaults(func=_dev)

    emu = sub.add_parser(
        "emulator",
        help="run the Graph API emulator in the foreground; with `-- COMMAND ...`, run COMMAND"
        " against it (FB_GRAPH_URL=emulator, its URL, ad accounts and Page set)",
    )
    emu.add_argument("--port", type=int, default=0)
    emu.add_argument("--seed", type=int, default=7)
    emu.add_argument(
        "run", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="a command to run against it"
    )
    emu.set_defaults(func=_emulator)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `crm-pipeline` console script."""
    args = build_parser().parse_args(argv)
    try:
        configure_logging()
        return args.func(args)
    except ConfigError as exc:
        print(f"crm-pipeline: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI's last line of defence: one clear line, non-zero exit
        from crm_pipeline.orchestrate import RunFailed

        if isinstance(exc, RunFailed | ValueError):  # ApiKeyError is a ValueError
            print(f"crm-pipeline: {exc}", file=sys.stderr)
            return 1
        import psycopg
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, psycopg.Error | DBAPIError):
            # hide_parameters keeps row values out; the first line names the problem.
            cause = getattr(exc, "orig", None) or exc
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause)
            print(f"crm-pipeline: database error: {first}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
