"""Ad-account routes: the ``act_<id>`` node, its ``insights`` (sync and async report runs),
object edges, and single campaign, ad set and ad nodes."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from graph_emulator.call import Call
from graph_emulator.data import EmulatorData, normalize_account_id
from graph_emulator.insights import InsightReader, parse_query, project
from graph_emulator.page_data import parse_graph_time
from graph_emulator.statuses import HIDDEN_BY_DEFAULT, status_set
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
_OBJECT_FILTERS = {"updated_time": {"GREATER_THAN"}, "effective_status": {"IN"}}
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
        self.reader = InsightReader(data)
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
            query = parse_query(call.params)
            page = call.page(self.reader.rows(call.node, query))
            # Projected after paging: a page costs its own rows, not the whole range's (every
            # page of a range asks for the whole range again).
            page["data"] = project(page["data"], query.columns)
            return page
        if call.edge in OBJECT_EDGES:
            page = call.page(self.objects(call.node, call.edge, call.params))
            self._refuse_broken([item["id"] for item in page["data"]], call.params)
            return page
        raise param_error(
            f"Tried accessing nonexisting field ({call.edge}) on node type (AdAccount)"
        )

    def insights(self, account_id: str, params: dict[str, str]) -> list[dict]:
        """The insight rows a call asks for, each with the fields it asks for."""
        query = parse_query(params)
        return project(self.reader.rows(account_id, query), query.columns)

    def objects(self, account_id: str, edge: str, params: dict[str, str]) -> list[dict]:
        """An object edge's items: Meta leaves deleted and archived objects out unless a filter
        on ``effective_status`` asks for them."""
        objects = getattr(self.data, edge)(account_id)
        fields = parse_fields(params.get("fields")) or ["id"]
        if objects:
            check_fields(fields, objects[0], OBJECT_EDGES[edge])
        wanted = None
        for name, _, value in parse_filtering(params.get("filtering"), _OBJECT_FILTERS):
            if name == "effective_status":
                wanted = status_set(value, name)
                continue
            after = unix_value(value, "updated_time")
            objects = [o for o in objects if _unix(o["updated_time"]) > after]
        if wanted is None:
            objects = [o for o in objects if o["effective_status"] not in HIDDEN_BY_DEFAULT]
        else:
            objects = [o for o in objects if o["effective_status"] in wanted]
        return [select_fields(obj, fields) for obj in objects]

    # -- single objects --------------------------------------------------------------------------

    def has_object(self, object_id: str) -> bool:
        """Whether ``object_id`` is a campaign, ad set or ad."""
        return object_id.isdigit() and self.data.find_object(object_id) is not None

    def object_node(self, call: Call) -> dict[str, Any]:
        """``GET <campaign, ad set or ad id>``: the object with the fields asked for."""
        found = self.data.find_object(call.node)
        if found is None:
            raise KeyError(call.node)
        node_type, obj = found
        if call.edge is not None:
            raise param_error(
                f"Tried accessing nonexisting field ({call.edge}) on node type ({node_type})"
            )
        fields = parse_fields(call.params.get("fields")) or ["id"]
        check_fields(fields, obj, node_type)
        self._refuse_broken([obj["id"]], call.params)
        return select_fields(obj, fields)

    def _refuse_broken(self, ids: list[str], params: dict[str, str]) -> None:
        """Meta fails a read returning an ad it cannot render, unless only ids are asked for."""
        if (parse_fields(params.get("fields")) or ["id"]) == ["id"]:
            return
        if any(self.data.is_broken(object_id) for object_id in ids):
            raise GraphError(
                "(#100) The ad creative is incomplete and cannot be returned",
                code=100,
                subcode=2446289,
            )

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
