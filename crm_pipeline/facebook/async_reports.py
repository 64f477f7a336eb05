"""Ad insights through async report runs: start, poll with backoff, retry, split, bound.

Meta recommends async report runs (``POST act_<id>/insights`` -> ``AdReportRun``) for large
insight reads. Jobs sometimes end ``Job Failed`` or ``Job Skipped`` (typically: too much data);
Meta's advice is to retry, then ask for less. So a job is retried ``job_retries`` times, then
split: the whole account into one job per campaign, a campaign into its ad sets, an ad set into
its ads, an ad's date range into halves. At most ``max_in_flight`` jobs are unfinished at once
(a single-threaded polling loop: no job is started while that many are pending). Every HTTP call
goes through the client's rate-limit governor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adreportrun import AdReportRun
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.fields import INSIGHT_FIELDS, insight_params

__all__ = ["AsyncInsightsRun", "AsyncReportStats", "ReportSlice"]

COMPLETED = "Job Completed"
FAILED_STATUSES = frozenset({"Job Failed", "Job Skipped"})
# Child level of each split, and the object edge listing the children.
_CHILD_LEVEL = {"account": "campaign", "campaign": "adset", "adset": "ad"}
_MAX_POLL_SECONDS = 30.0


def _statuses(cls: type) -> list[str]:
    return sorted(v for k, v in vars(cls.EffectiveStatus).items() if not k.startswith("_"))


@dataclass
class AsyncReportStats:
    """What the report runs of one read did.

    ``jobs_started``: report runs created; ``jobs_completed``; ``jobs_failed``: runs that ended
    ``Job Failed``/``Job Skipped`` or timed out; ``job_retries``: failed jobs started again as
    they were; ``splits``: failed jobs replaced by smaller ones; ``polls``: status reads;
    ``max_in_flight``: most unfinished jobs at once; ``rows``: rows yielded;
    ``duplicates_dropped``: rows seen twice on ``(ad_id, date_start)``.
    """

    jobs_started: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    job_retries: int = 0
    splits: int = 0
    polls: int = 0
    max_in_flight: int = 0
    rows: int = 0
    duplicates_dropped: int = 0


@dataclass(frozen=True)
class ReportSlice:
    """The scope of one job: a date range and, below account level, one object's id."""

    since: date
    until: date
    level: str = "account"  # account | campaign | adset | ad
    object_id: str | None = None

    def params(self) -> dict[str, Any]:
        """The insight parameters of this job's read."""
        only = None if self.level == "account" else (self.level, str(self.object_id))
        return insight_params(self.since, self.until, only=only)

    def describe(self) -> str:
        """The slice in words, for error messages."""
        scope = "the account" if self.level == "account" else f"{self.level} {self.object_id}"
        return f"{scope}, {self.since.isoformat()}..{self.until.isoformat()}"


@dataclass
class _Job:
    slice: ReportSlice
    attempt: int
    run: AdReportRun
    started: float
    next_poll: float
    interval: float


class AsyncInsightsRun(Iterator[dict]):
    """An iterator of insight rows of ``since..until`` fetched through async report runs.

    Rows are deduplicated on ``(ad_id, date_start)``; ``stats`` (:class:`AsyncReportStats`)
    describe the jobs. A failed or skipped job is retried ``job_retries`` times, then split
    (campaigns, ad sets, ads, then date halves); at most ``max_in_flight`` jobs are unfinished
    at once. ``sleep`` and ``clock`` pace the status polls (tests pass fakes).
    """

    def __init__(
        self,
        client: GraphClient,
        account_id: str,
        since: date,
        until: date,
        *,
        fields: tuple[str, ...] = INSIGHT_FIELDS,
        limit: int = 500,
        max_in_flight: int = 3,
        job_retries: int = 2,
        job_timeout_seconds: float = 3600.0,
        poll_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if job_retries < 0:
            raise ValueError(f"job_retries must not be negative, got {job_retries}")
        if until < since:
            raise ValueError(f"until ({until}) is before since ({since})")
        self.client = client
        self.account = client.account(account_id)
        self.account_id = self.account.get_id()
        self.since, self.until = since, until
        self.fields = tuple(fields)
        self.limit = limit
        self.max_in_flight = max_in_flight
        self.job_retries = job_retries
        self.job_timeout_seconds = job_timeout_seconds
        # Polls back off like the governor does: from its base backoff up to 30 s.
        settings = getattr(client.governor, "settings", None)
        base = settings.base_backoff_seconds if settings is not None else 1.0
        self.poll_seconds = base if poll_seconds is None else poll_seconds
        self.max_poll_seconds = max(self.poll_seconds, _MAX_POLL_SECONDS * min(1.0, base))
        self.sleep, self.clock = sleep, clock
        self.stats = AsyncReportStats()
        self._children: dict[str, dict[str, list[str]]] = {}
        self._seen: set[tuple[Any, Any]] = set()
        self._rows = self._generate()

    def __iter__(self) -> AsyncInsightsRun:
        return self

    def __next__(self) -> dict:
        return next(self._rows)

    # -- the polling loop ------------------------------------------------------------------------

    def _generate(self) -> Iterator[dict]:
        pending: deque[tuple[ReportSlice, int]] = deque([(ReportSlice(self.since, self.until), 0)])
        in_flight: list[_Job] = []
        while pending or in_flight:
            while pending and len(in_flight) < self.max_in_flight:
                part, attempt = pending.popleft()
                in_flight.append(self._start(part, attempt, self.clock()))
                self.stats.max_in_flight = max(self.stats.max_in_flight, len(in_flight))
            now = self.clock()
            due = [job for job in in_flight if job.next_poll <= now]
            if not due:
                self.sleep(max(0.0, min(job.next_poll for job in in_flight) - now))
                continue
            for job in due:
                status, percent = self._poll(job)
                if status == COMPLETED and percent >= 100:
                    in_flight.remove(job)
                    self.stats.jobs_completed += 1
                    yield from self._new_rows(job)
                elif (
                    status in FAILED_STATUSES
                    or self.clock() - job.started > self.job_timeout_seconds
                ):
                    in_flight.remove(job)
                    self._failed(job, status, pending)
                else:
                    job.interval = min(self.max_poll_seconds, job.interval * 1.5)
                    job.next_poll = self.clock() + job.interval

    def _new_rows(self, job: _Job) -> Iterator[dict]:
        """The finished job's rows not yielded before (split jobs may overlap)."""
        for row in self._results(job):
            if "ad_id" in row:
                key = (row.get("ad_id"), row.get("date_start"))
                if key in self._seen:
                    self.stats.duplicates_dropped += 1
                    continue
                self._seen.add(key)
            self.stats.rows += 1
            yield row

    def _failed(self, job: _Job, status: str, pending: deque[tuple[ReportSlice, int]]) -> None:
        """Queue a failed job again, or (out of retries) the smaller jobs that replace it."""
        self.stats.jobs_failed += 1
        if job.attempt < self.job_retries:
            self.stats.job_retries += 1
            pending.appendleft((job.slice, job.attempt + 1))
        else:
            parts = self._split(job.slice, status)
            self.stats.splits += 1
            pending.extendleft((part, 0) for part in reversed(parts))

    def _start(self, part: ReportSlice, attempt: int, now: float) -> _Job:
        run = self.client.request(
            lambda: self.account.get_insights(
                fields=list(self.fields), params=part.params(), is_async=True
            )
        )
        run_id = run.get_id()
        if not run_id:
            raise GraphApiError("Graph API did not return a report_run_id for an async report")
        self.client.bind_node(run_id, self.account_id)
        self.stats.jobs_started += 1
        return _Job(part, attempt, run, now, now + self.poll_seconds, self.poll_seconds)

    def _poll(self, job: _Job) -> tuple[str, float]:
        fields = [AdReportRun.Field.async_status, AdReportRun.Field.async_percent_completion]
        self.client.request(lambda: job.run.api_get(fields=fields))
        self.stats.polls += 1
        status = str(job.run.get(AdReportRun.Field.async_status) or "")
        try:
            percent = float(job.run.get(AdReportRun.Field.async_percent_completion) or 0)
        except (TypeError, ValueError):
            percent = 0.0
        return status, percent

    def _results(self, job: _Job) -> Iterator[dict]:
        run = job.run
        # A fresh dict per read: the governor may shrink its `limit` on reduce-data errors.
        yield from self.client.iterate(lambda: run.get_insights(params={"limit": self.limit}))

    # -- splitting -------------------------------------------------------------------------------

    def _split(self, part: ReportSlice, status: str) -> list[ReportSlice]:
        child_level = _CHILD_LEVEL.get(part.level)
        if child_level is not None:
            ids = self._child_ids(part.level, part.object_id)
            if ids:
                return [replace(part, level=child_level, object_id=i) for i in ids]
        # No smaller objects to ask for (an ad, or a parent we cannot list): halve the dates.
        if part.since < part.until:
            middle = part.since + timedelta(days=(part.until - part.since).days // 2)
            return [replace(part, until=middle), replace(part, since=middle + timedelta(days=1))]
        raise GraphApiError(
            f"Async insights report for {part.describe()} ended {status or 'unfinished'!r} "
            f"{self.job_retries + 1} times and cannot be split further",
            is_transient=True,
        )

    def _child_ids(self, level: str, object_id: str | None) -> list[str]:
        """Ids of the campaigns of the account, ad sets of a campaign, ads of an ad set."""
        if level == "account":
            return sorted(self._children_of("campaign").get("", []))
        return sorted(self._children_of(_CHILD_LEVEL[level]).get(str(object_id), []))

    def _children_of(self, level: str) -> dict[str, list[str]]:
        """Objects of ``level`` grouped by parent id ("" for campaigns), listed once per run.

        Every effective status is asked for: a paused, archived or deleted object can still have
        spend in the range, and leaving it out of the split would lose its rows.
        """
        if level in self._children:
            return self._children[level]
        account = self.account
        if level == "campaign":
            fetch, parent, cls = account.get_campaigns, None, Campaign
        elif level == "adset":
            fetch, parent, cls = account.get_ad_sets, "campaign_id", AdSet
        else:
            fetch, parent, cls = account.get_ads, "adset_id", Ad
        fields = ["id"] + ([parent] if parent else [])
        params = {"limit": 500, "effective_status": _statuses(cls)}
        grouped: dict[str, list[str]] = {}
        for obj in self.client.iterate(lambda: fetch(fields=fields, params=params)):
            grouped.setdefault(str(obj.get(parent, "")) if parent else "", []).append(
                str(obj["id"])
            )
        self._children[level] = grouped
        return grouped
