"""What a Facebook asset step reports about its Graph API session: usage and Meta's warnings.

Every Facebook asset ends its Graph session with :func:`graph_metadata`, so each one reports
the same keys, and each logs Meta's version and deprecation warnings the same way, once.
"""

import time
from typing import Any

import dagster as dg

from crm_pipeline.defs.facebook.resources import GraphSession

__all__ = ["graph_metadata", "log_api_warnings"]


def graph_metadata(graph: GraphSession) -> dict[str, Any]:
    """API usage of this step: calls, retries and waits imposed by Meta's rate limits.

    Also the step's warnings from Meta (an API version about to expire, a deprecated edge):
    `api_warnings`, when there are any, after logging each new one (:func:`log_api_warnings`).
    """
    warnings = log_api_warnings(graph)
    meta: dict[str, Any] = {
        "api_calls": graph.client.calls,
        "graph_server": graph.server,
        # Time in the Graph session so far: requests, paging, rate-limit waits.
        "graph_seconds": round(time.perf_counter() - graph.opened_at, 3),
    }
    stats = getattr(getattr(graph.client, "governor", None), "stats", None)
    if stats is not None:
        meta.update(
            {
                # Calls that returned data: each is one page of some edge.
                "pages": max(0, stats.calls - stats.retries),
                "retries": stats.retries,
                "throttle_waits": stats.throttle_waits,
                "waited_seconds": round(stats.waited_seconds, 3),
                "page_size_reductions": stats.page_size_reductions,
            }
        )
    if warnings:
        meta["api_warnings"] = warnings
    return meta


def log_api_warnings(graph: GraphSession, log: Any = None) -> list[str]:
    """Log each of Meta's warnings this step's clients have seen, once, as a WARNING in the
    run's log (`log`: default the running step's `context.log`); returns all of them.

    They were redacted by the client when received. A sync on an expiring version keeps
    working, so this and the metadata are how anyone notices before it stops.
    """
    notices = getattr(graph.client, "notices", None)
    if notices is None:
        return []
    new = notices.unreported()
    if new or notices.dropped:
        log = log if log is not None else _step_log()
        for text in new:
            log.warning(f"Meta API warning ({graph.client.api_version}): {text}")
        if notices.dropped:
            log.warning(f"{notices.dropped} more Meta API warning(s) not kept (limit reached)")
    return notices.notices


def _step_log() -> Any:
    """The running step's `context.log`; Dagster's logger outside a step (direct calls)."""
    try:
        return dg.OpExecutionContext.get().log
    except dg.DagsterInvariantViolationError:
        return dg.get_dagster_logger()
