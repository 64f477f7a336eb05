"""Ad-account routes: the ``act_<id>`` node, its ``insights`` (sync and async report runs) and
object edges."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from graph_emulator.call import Call
from graph_emulator.data import EmulatorData, normalize_account_id
from graph_emulator.page_data import parse_graph_time
from graph_emulator.wire import (
    GraphError,
    check_fields,
    page_items,
    param_error,
    parse_fields,
    parse_filtering,
    parse_time_range,
    unix_value,
)

__all__ = ["AD_ACCOUNT_FIELDS", "OBJECT_EDGES", "AdRoutes", "ReportRun", "project_ad_account"]

AD_ACCOUNT_FIELDS = ("id", "account_id", "name", "currency", "timezone_name", "account_status")
# Meta's default when no `fields` are asked for: the account's two ids.
_DEFAULT_AD_ACCOUNT_FIELDS = ["account_id"]
OBJECT_EDGES = {"campaigns": "Campaign", "adsets": "AdSet", "ads": "Ad"}
# Insight parameters that would change the shape of the result; silently ignoring them would
# return plausible but wrong data, so the emulator rejects them instead.
_UNSUPPORTED_INSIGHT_PARAMS = ("breakdowns", "action_breakdowns", "time_ranges", "date_preset")
_DEFAULT_INSIGHT_FIELDS = ("impressions", "spend")
_DATE_FIELDS = ("date_start", "date_stop")
_INSIGHT_FILTERS = {f"{level}.id": {"IN", "EQUAL"} for level in ("campaign", "adset", "ad")}
_OBJECT_FILTERS = {"updated_time": {"GREATER_THAN"}}
_PENDING = ("Job Not Started", "Job Started", "Job Running")
_COMPLETED, _FAILED = "Job Completed", "Job Failed"
_REPORT_RUN_ID_BASE = 6120000000000


@dataclass
class ReportRun:
    """An async insights job: created by a POST, advanced one step by each status poll."""

    id: str
    account_id: str  # bare digits, as Meta reports it
    date_start: str
    date_stop: str
    rows: list[dict]
    will_fail: bool
    time_ref: int
    polls: int = 0
    status: str = _PENDING[0]
    percent: int = 0
    time_completed: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in (_COMPLETED, _FAILED)

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "account_id": self.account_id,
            "time_ref": self.time_ref,
            "async_status": self.status,
            "async_percent_completion": self.percent,
            "date_start": self.date_start,
            "date_stop": self.date_stop,
            "is_running": not self.finished,
        }
        if self.time_completed is not None:
            body["time_completed"] = self.time_completed
        return body


class AdRoutes:
    """Serves ad-account edges and report runs from :class:`EmulatorData`."""

    def __init__(self, data: EmulatorData, polls_to_complete: int) -> None:
        if polls_to_complete < 0:
            raise ValueError("async_polls_to_complete must not be negative")
        self.data = data
        self.polls_to_complete = polls_to_complete
        self._lock = threading.Lock()
        self._runs: dict[str, ReportRun] = {}
        self._ids = itertools.count(1)
        self.max_in_flight = 0

    # -- account edges ---------------------------------------------------------------------------

    def account_edge(self, call: Call) -> dict[str, Any]:
        """``GET act_<id>`` (the node) or one of its edges."""
        if call.edge is None:
            return project_ad_account(self.data.ad_account(call.node), call.params)
        if call.edge == "insights":
            rows, fields = self._insight_rows(call.node, call.params)
            page = call.page(rows)
            # Projected after paging: a page costs its own rows, not the whole range's (every
            # page of a range asks for the whole range again).
            page["data"] = _project(page["data"], fields)
            return page
        if call.edge in OBJECT_EDGES:
            return call.page(self.objects(call.node, call.edge, call.params))
        raise param_error(
            f"Tried accessing nonexisting field ({call.edge}) on node type (AdAccount)"
        )

    def insights(self, account_id: str, params: dict[str, str]) -> list[dict]:
        """The insight rows a call asks for, each with the fields it asks for."""
        rows, fields = self._insight_rows(account_id, params)
        return _project(rows, fields)

    def _insight_rows(
        self, account_id: str, params: dict[str, str]
    ) -> tuple[list[dict], list[str]]:
        """The call's rows (validated, filtered, not yet projected) and the fields to keep."""
        level = params.get("level", "account")
        if level != "ad":
            raise param_error(f"level={level} is not supported by the emulator; use level=ad")
        increment = params.get("time_increment", "all_days")
        if increment != "1":
            raise param_error(f"time_increment={increment} is not supported by the emulator; use 1")
        for name in _UNSUPPORTED_INSIGHT_PARAMS:
            if params.get(name, "") not in ("", "[]"):
                raise param_error(f"{name} is not supported by the emulator")
        filters = parse_filtering(params.get("filtering"), _INSIGHT_FILTERS)
        since, until = parse_time_range(params.get("time_range"))
        rows = self.data.insights(account_id, since, until)
        fields = parse_fields(params.get("fields")) or list(_DEFAULT_INSIGHT_FIELDS)
        if rows:
            check_fields(fields, rows[0], "AdsInsights")
        for name, operator, value in filters:
            wanted = _id_set(value, operator, name)
            key = name.replace(".id", "_id")
            rows = [row for row in rows if row[key] in wanted]
        # Meta always reports the reporting window of each row, requested or not.
        return rows, fields + [f for f in _DATE_FIELDS if f not in fields]

    def objects(self, account_id: str, edge: str, params: dict[str, str]) -> list[dict]:
        objects = getattr(self.data, edge)(account_id)
        fields = parse_fields(params.get("fields")) or ["id"]
        if objects:
            check_fields(fields, objects[0], OBJECT_EDGES[edge])
        for _, _, value in parse_filtering(params.get("filtering"), _OBJECT_FILTERS):
            after = unix_value(value, "updated_time")
            objects = [o for o in objects if _unix(o["updated_time"]) > after]
        return [select_fields(obj, fields) for obj in objects]

    # -- async report runs -----------------------------------------------------------------------

    def create_report_run(self, call: Call, *, will_fail: bool) -> dict[str, Any]:
        """``POST act_<id>/insights``: validate like the sync call, then queue a job."""
        rows = self.insights(call.node, call.params)
        since, until = parse_time_range(call.params.get("time_range"))
        with self._lock:
            run = ReportRun(
                id=str(_REPORT_RUN_ID_BASE + next(self._ids)),
                account_id=normalize_account_id(call.node).removeprefix("act_"),
                date_start=since.isoformat(),
                date_stop=until.isoformat(),
                rows=rows,
                will_fail=will_fail,
                time_ref=int(time.time()),
            )
            self._runs[run.id] = run
            in_flight = sum(1 for r in self._runs.values() if not r.finished)
            self.max_in_flight = max(self.max_in_flight, in_flight)
        return {"report_run_id": run.id}

    def has_run(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def run_account(self, run_id: str) -> str | None:
        with self._lock:
            run = self._runs.get(run_id)
            return run.account_id if run is not None else None

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [run.wire() for run in self._runs.values()]

    def report_run(self, call: Call) -> dict[str, Any]:
        """``GET <run id>`` (one poll: advances the job) or ``GET <run id>/insights``."""
        if call.edge == "insights":
            return self._results(call)
        if call.edge is not None:
            raise param_error(
                f"Tried accessing nonexisting field ({call.edge}) on node type (AdReportRun)"
            )
        with self._lock:
            run = self._runs[call.node]
            self._advance(run)
            body = run.wire()
        fields = parse_fields(call.params.get("fields"))
        if fields is None:
            return body
        check_fields(fields, body, "AdReportRun")
        return select_fields(body, fields)

    def _advance(self, run: ReportRun) -> None:
        if run.finished:
            return
        run.polls += 1
        if run.polls >= self.polls_to_complete:
            run.status = _FAILED if run.will_fail else _COMPLETED
            run.percent = run.percent if run.will_fail else 100
            run.time_completed = int(time.time())
            return
        run.status = _PENDING[min(run.polls - 1, len(_PENDING) - 1)]
        run.percent = 0 if run.polls == 1 else min(99, 100 * run.polls // self.polls_to_complete)

    def _results(self, call: Call) -> dict[str, Any]:
        with self._lock:
            run = self._runs[call.node]
            status, rows = run.status, run.rows
        if status != _COMPLETED:
            raise GraphError(
                f"(#100) Report run {run.id} is not completed (async_status: {status})",
                code=100,
                error_type="OAuthException",
            )
        url = call.edge_url(call.node, "insights")
        return page_items(rows, url, call.params, call.limit())


def _project(rows: list[dict], fields: list[str]) -> list[dict]:
    return [{name: row[name] for name in fields} for row in rows]


def project_ad_account(account: dict, params: dict[str, str]) -> dict[str, Any]:
    """The requested ``fields`` of one ad account (``id`` always); unknown fields are code 100."""
    fields = parse_fields(params.get("fields")) or _DEFAULT_AD_ACCOUNT_FIELDS
    check_fields(fields, AD_ACCOUNT_FIELDS, "AdAccount")
    return select_fields(account, fields)


def select_fields(record: dict, fields: list[str]) -> dict[str, Any]:
    """``fields`` of ``record``, led by its ``id``: Graph nodes always carry their id."""
    return {name: record[name] for name in ["id"] + [f for f in fields if f != "id"]}


def _unix(graph_time: str) -> int:
    return int(parse_graph_time(graph_time).timestamp())


def _id_set(value: Any, operator: str, name: str) -> set[str]:
    values = value if isinstance(value, list) else [value]
    if operator == "EQUAL" and isinstance(value, list):
        raise param_error(f"Filter {name} EQUAL takes a single id")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        raise param_error(f"Filter {name} values must be ids")
    return {str(v) for v in values}
