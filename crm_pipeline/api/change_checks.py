"""`ChangeChecks`: is there a change newer than a cache file's watermark? Many requests, one query.

See docs/architecture.md (cache-first reads) for when memory answers instead.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import text

from crm_pipeline.api.database import Database

# Per key: a change to one of its tables at or after the file's watermark; for a customer's
# file, only a change naming that customer, to a table every customer's file reads (`shared`),
# or a TRUNCATE. The numbers of the stale keys (as passed), and the snapshot's xmin: every
# transaction below it has finished, so a key found current has no relevant change below it.
_CHANGED_SINCE = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS upto, ARRAY(
  SELECT k.n FROM unnest(CAST(:watermarks AS xid8[]), CAST(:entities AS text[]),
                         CAST(:customers AS bigint[]), CAST(:shared AS text[]))
       WITH ORDINALITY AS k(watermark, entities, customer_id, shared, n)
  WHERE EXISTS (SELECT 1 FROM change_log c
                WHERE c.txid >= k.watermark AND c.entity = ANY(string_to_array(k.entities, ','))
                  AND (k.customer_id IS NULL OR c.customer_id = k.customer_id
                       OR c.op = 'truncate' OR c.entity = ANY(string_to_array(k.shared, ','))))
) AS stale
"""

# One waiting question: (watermark, entities, customer_id, shared) as the query takes them.
_Question = tuple[str, str, int | None, str]
_Answer = tuple[bool, int]


@dataclass
class _LoopQueue:
    waiting: list[tuple[_Question, asyncio.Future[_Answer]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class ChangeChecks:
    """Is there a change newer than a file's watermark? Asked for many requests in one query.

    The fallback for hits memory cannot answer (`RecentChanges`: listener down, or a file older
    than its coverage floor). There that question is the only database work, and asked once
    per request it costs a pooled connection and four round trips (ping, BEGIN, query, COMMIT)
    plus a worker thread: several times the rest of the hit. So requests wait on the event
    loop, and one query at a time (in a worker thread) answers every request that arrived
    before it started, as a group commit does. Each answer still comes from a snapshot taken
    after its request arrived, so a write committed before a read is always seen by that read:
    exactly what one query per request gives.

    The query runs on a thread of its own, not in the shared worker pool: when misses fill
    that pool with builds, hits must not queue behind them.
    """

    MAX_BATCH = 256

    def __init__(self, db: Database) -> None:
        self.db = db
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-check")
        self._lock = threading.Lock()
        # Futures belong to one event loop: one queue per loop (tests may run several).
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    async def changed_since(
        self,
        watermark: str,
        entities: tuple[str, ...],
        customer_id: int | None,
        shared: tuple[str, ...] = (),
    ) -> _Answer:
        """(stale, upto): stale when a change at or after `watermark` touches `entities` (and
        `customer_id`, unless it is to one of the `shared` tables); `upto` is the xmin of the
        snapshot that answered (no transaction below it can still commit)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _LoopQueue()
        future: asyncio.Future[_Answer] = loop.create_future()
        question = (watermark, ",".join(entities), customer_id, ",".join(shared))
        queue.waiting.append((question, future))
        if queue.task is None:
            queue.task = loop.create_task(self._drain(queue))
        return await future

    def close(self) -> None:
        """Stop the query thread (a question still queued is cancelled)."""
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def _drain(self, queue: _LoopQueue) -> None:
        try:
            while queue.waiting:
                batch = queue.waiting[: self.MAX_BATCH]
                del queue.waiting[: self.MAX_BATCH]
                await self._answer(batch)
        finally:
            queue.task = None
            for _, future in queue.waiting:  # only when cancelled
                future.cancel()
            queue.waiting.clear()

    async def _answer(self, batch: list[tuple[_Question, asyncio.Future[_Answer]]]) -> None:
        try:
            stale, upto = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._query, [question for question, _ in batch]
            )
        except Exception as exc:  # every caller in the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutting down): nobody is left waiting
            for _, future in batch:
                future.cancel()
            raise
        for n, (_, future) in enumerate(batch, start=1):
            if not future.done():
                future.set_result((n in stale, upto))

    def _query(self, questions: list[_Question]) -> tuple[set[int], int]:
        params = {
            "watermarks": [q[0] for q in questions],
            "entities": [q[1] for q in questions],
            "customers": [q[2] for q in questions],
            "shared": [q[3] for q in questions],
        }
        # One statement: its snapshot is taken when it starts, after every request it answers.
        row = self.db.run_statement(lambda conn: conn.execute(text(_CHANGED_SINCE), params).one())
        return set(row.stale), int(row.upto)
