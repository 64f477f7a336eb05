"""`crm-pipeline status` on screen: one rich table on a terminal, the same rows as plain text
anywhere else (a pipe, a log, a monitor that captures it). `--json` prints the document as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from crm_pipeline.progress import is_terminal

Row = tuple[str, str, str, str]  # area, item, state ("ok", "PROBLEM" or ""), detail
_WIDTHS = (12, 30, 8)


def render_json(document: dict[str, Any], out: TextIO) -> None:
    """The document, indented, as the README documents it."""
    print(json.dumps(document, indent=2, default=str), file=out)


def render(document: dict[str, Any], out: TextIO) -> None:
    """The rows of `rows(document)` and the problems: a rich table on a terminal, else text."""
    title = _title(document)
    table = list(rows(document))
    if is_terminal(out):
        _rich(title, table, document["problems"], out)
        return
    print(title, file=out)
    for area, item, state, detail in table:
        cells = (area, item, state)
        print(" ".join(f"{c:<{w}}" for c, w in zip(cells, _WIDTHS, strict=True)), detail, file=out)
    for found in document["problems"]:
        print(f"problem: {found['check']}: {found['message']}", file=out)


def _title(document: dict[str, Any]) -> str:
    count = len(document["problems"])
    verdict = "ok" if not count else f"{count} problem(s) need attention"
    return f"crm-pipeline status at {document['checked_at']}: {verdict}"


def _rich(title: str, table: list[Row], problems: list[dict], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title, title_justify="left")
    shown.add_column("area", no_wrap=True)
    shown.add_column("item", max_width=40, overflow="fold")
    shown.add_column("state", no_wrap=True)
    shown.add_column("detail", ratio=1, overflow="fold")
    style = {"ok": "green", "PROBLEM": "bold red"}
    for area, item, state, detail in table:
        shown.add_row(area, item, state, detail, style=style.get(state))
    console = Console(file=out)
    console.print(shown)
    for found in problems:
        console.print(f"[bold red]problem[/] {found['check']}: {found['message']}", markup=True)


def _codes(document: dict[str, Any]) -> set[str]:
    return {p["check"] for p in document["problems"]}


def rows(document: dict[str, Any]) -> Iterator[Row]:
    """The screen's rows, section by section."""
    codes = _codes(document)
    yield _database_row(document["database"], codes)
    yield from _cache_rows(document["cache"], codes)
    worker = document["cache_worker"]
    if worker is not None:
        yield _worker_row(worker, codes)
    if document["sync"] is not None:
        yield from _sync_rows(document["sync"])
    webhooks = document["webhooks"]
    if webhooks is not None:
        state = "PROBLEM" if "webhook_events_rejected" in codes else "ok"
        yield (
            "webhooks",
            "webhook_inbox",
            state,
            f"{webhooks['pending']} pending (oldest {webhooks['oldest_pending_at'] or '-'}), "
            f"{webhooks['rejected']} rejected ({webhooks['rejected_recent']} in the last "
            f"{webhooks['recent_hours']} h)",
        )
    yield _dagster_row(document["dagster"], codes)


def _database_row(db: dict[str, Any], codes: set[str]) -> Row:
    if not db["reachable"]:
        return ("database", db["url"] or "-", "PROBLEM", f"unreachable: {db['error']}")
    state = "ok" if db["at_head"] else "PROBLEM"
    head = "head" if db["at_head"] else f"head is {db['head']}"
    demo = "; a demo database (emulator data)" if db["demo_database"] else ""
    return ("database", db["url"], state, f"revision {db['revision'] or 'none'} ({head}){demo}")


def _cache_rows(cache: dict[str, Any], codes: set[str]) -> Iterator[Row]:
    if cache["error"]:
        yield ("cache", cache["location"], "PROBLEM", cache["error"])
        return
    yield ("cache", cache["location"], "", f"grace {cache['grace_seconds']}s")
    for entry in cache["files"]:
        state = "PROBLEM" if entry["stale"] else ("ok" if entry["behind"] is False else "")
        yield ("cache", entry["path"], state, _file_detail(entry))


def _lag_detail(entry: dict[str, Any]) -> str:
    if entry["behind"] is None:
        return "not compared (no database)"
    if not entry["behind"]:
        return "up to date"
    return f"behind: {entry['pending_changes']} change(s) since {entry['oldest_pending_at']}"


def _file_detail(entry: dict[str, Any]) -> str:
    if entry["per_customer"]:
        head = (
            f"{entry['files']} files ({entry['read']} read), oldest generated "
            f"{entry['oldest_generated_at'] or '-'} (watermark {entry['oldest_watermark'] or '-'})"
        )
        if entry["customers_checked"] is not None:
            head += (
                f"; {entry['customers_behind']} of {entry['customers_checked']} recently "
                "changed customers behind"
            )
        return f"{head}; {_lag_detail(entry)}"
    if not entry["exists"]:
        return f"missing; {_lag_detail(entry)}"
    schema = "" if entry["schema_current"] else f", schema {entry['schema_version']} (old)"
    parts = ""
    if "segments" in entry:  # the customer index: its manifest
        parts = f"{entry['segments']} segments, {entry['customers']} customers; manifest "
    return (
        f"{parts}generated {entry['generated_at']} ({entry['age_seconds']}s ago), watermark "
        f"{entry['watermark']}{schema}; {_lag_detail(entry)}"
    )


def _worker_row(worker: dict[str, Any], codes: set[str]) -> Row:
    state = "PROBLEM" if "cache_worker_down" in codes else ("ok" if worker["alive"] else "")
    if not worker["seen"]:
        beat = "never ran"
    else:
        life = "alive" if worker["alive"] else "silent"
        beat = (
            f"{life}: heartbeat {worker['heartbeat_age_seconds']}s ago on {worker['host']} "
            f"(pid {worker['pid']})"
        )
    lag = f"{worker['lag_changes']} change(s) past its watermark ({worker['lag_seconds']}s)"
    return ("cache worker", worker["name"], state, f"{beat}; {lag}")


def _sync_rows(sync: dict[str, Any]) -> Iterator[Row]:
    for account in sync["insights"]:
        yield (
            "sync",
            f"insights {account['account_id']}",
            "",
            f"last loaded {account['last_synced_at']}, newest day {account['newest_date']}",
        )
    by_stream: dict[str, list[dict]] = {}
    for entry in sync["streams"]:
        by_stream.setdefault(entry["stream"], []).append(entry)
    for stream, entries in by_stream.items():
        newest = max(e["updated_at"] or "" for e in entries)
        yield ("sync", stream, "", f"{len(entries)} scope(s), watermark last moved {newest}")
    for entry in sync["interrupted_cli_syncs"]:
        yield (
            "sync",
            "interrupted sync",
            "",
            f"{entry['scope']}: {entry['done']} account-days done, last at {entry['updated_at']}"
            " (run the same `sync facebook` again to resume)",
        )
    for landing in sync["raw_landings"]:
        yield ("sync", f"raw {landing['stream']}", "", f"landed {landing['last_landed_at']}")


def _dagster_row(dagster: dict[str, Any], codes: set[str]) -> Row:
    if not dagster["configured"]:
        return ("dagster", "-", "", "no instance configured (DAGSTER_HOME unset, none local)")
    if not dagster["readable"]:
        return ("dagster", dagster["home"], "PROBLEM", f"unreadable: {dagster['error']}")
    failing = dagster["failing_checks"]
    names = ", ".join(f"{c['asset']}:{c['check']} ({c['severity']})" for c in failing)
    state = "PROBLEM" if "asset_checks_failing" in codes else "ok"
    detail = f"{dagster['checks_seen']} checks seen; failing: {names or 'none'}"
    return ("dagster", dagster["home"], state, detail)
