"""What changed lately, in memory: lets a process tell whether a cache file is current without
asking the database.

A `RecentChanges` holds, per table (`entity`) and per (table, customer), the highest
transaction id (`txid`) of a committed change, fed by `crm_changes` notifications (the API's
change listener) and by the process's own writes. Its **coverage floor** `C` is the promise that
makes an answer from memory safe: every committed change with `txid >= C` is recorded (once its
notification has been processed). A cache file whose watermark `W` (every change below `W` is
reflected) is at least `C` is then stale exactly when a relevant change recorded here has
`txid >= W`. Below the floor, or while nothing is covered (listener disconnected, not caught
up), `check` says so and the caller asks the database instead.

How the floor is set (by the listener, `cover`): after `LISTEN` has taken effect, one snapshot
gives `C = pg_snapshot_xmin` and the change rows with `txid >= C`. Every transaction below `C`
has finished, so only those at or above it can still matter; the ones that committed before the
snapshot are in those rows, the ones committing after it send a notification.

Memory stays bounded: when an entry has to go, the floor is raised above its txid, so the
forgotten knowledge turns into database checks, never into a wrong "current".

Each entry also remembers the newest change *this process* wrote (`record_own`), with a
sequence number, so a reader can tell "stale because of my own write, not yet rebuilt" (rebuild
it now: read-your-writes) from "stale because of someone else" (serve, refresh in background).

A reader that keeps its own memory of changes (the API's customer index, by segment) can
`subscribe` to every change as it is recorded, with its own-write sequence (0: someone else's).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MAX_CUSTOMER_ENTRIES = 100_000  # (table, customer) pairs remembered
MAX_ENTITY_ENTRIES = 1_000  # tables: a few dozen in practice; bounded anyway


@dataclass(frozen=True)
class Change:
    """A committed change: table `entity` in transaction `txid`, naming `customer_id` (if any);
    `all_customers` for a TRUNCATE."""

    txid: int
    entity: str
    customer_id: int | None = None
    all_customers: bool = False


@dataclass(frozen=True)
class Check:
    """What memory knows about a file with threshold `since`.

    `covered`: memory alone can answer, and `stale` is the answer. `own`: a change this process
    wrote at or after `since`, newer than the caller's last rebuild, is relevant, so the file is
    certainly stale (whatever `covered` says).
    """

    covered: bool
    stale: bool
    own: bool


class _Entry:
    """Highest txid of any change, and of this process's own changes, with its sequence."""

    __slots__ = ("own_seq", "own_txid", "txid")

    def __init__(self) -> None:
        self.txid = 0
        self.own_txid = 0
        self.own_seq = 0


class RecentChanges:
    """Thread-safe memory of recent changes with a coverage floor (see the module docstring)."""

    def __init__(
        self,
        max_customer_entries: int = MAX_CUSTOMER_ENTRIES,
        max_entity_entries: int = MAX_ENTITY_ENTRIES,
    ) -> None:
        self.max_customer_entries = max_customer_entries
        self.max_entity_entries = max_entity_entries
        self._lock = threading.Lock()
        self._floor: int | None = None
        self._entities: OrderedDict[str, _Entry] = OrderedDict()  # any change to the table
        self._truncates: OrderedDict[str, _Entry] = OrderedDict()  # TRUNCATEs of the table
        self._customers: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._own_seq = 0
        self._highest = 0
        self._subscribers: list[Callable[[Change, int], None]] = []

    # --- state --------------------------------------------------------------------------

    @property
    def floor(self) -> int | None:
        """The coverage floor, or None while memory covers nothing."""
        return self._floor

    @property
    def own_sequence(self) -> int:
        """How many own writes were recorded: take it before a build's snapshot, pass it to
        `check` as `own_reflected` for the file that build produced."""
        return self._own_seq

    @property
    def highest_txid(self) -> int:
        """The highest txid recorded so far (0: none)."""
        return self._highest

    def size(self) -> int:
        """Entries held (tables, truncates and (table, customer) pairs)."""
        with self._lock:
            return len(self._entities) + len(self._truncates) + len(self._customers)

    # --- feeding ------------------------------------------------------------------------

    def subscribe(self, subscriber: Callable[[Change, int], None]) -> None:
        """Call `subscriber(change, own_seq)` for every change recorded from now on (own_seq 0:
        not this process's write). It runs under this memory's lock: it must be quick and must
        not call back into it."""
        with self._lock:
            self._subscribers.append(subscriber)

    def cover(self, floor: int, changes: Iterable[Change]) -> None:
        """Start covering from `floor` with the committed `changes` at or above it (the
        listener's catch-up, read in the snapshot whose xmin is `floor`)."""
        with self._lock:
            self._floor = floor
            for table in (self._entities, self._truncates, self._customers):
                # Below the floor an entry can never decide an answer: drop it.
                for name in [n for n, e in table.items() if e.txid < floor]:
                    del table[name]
            for change in changes:
                self._record(change, own_seq=0)

    def uncover(self) -> None:
        """Stop answering from memory (the listener lost its connection)."""
        with self._lock:
            self._floor = None

    def record(self, change: Change) -> None:
        """A committed change someone made (a notification)."""
        with self._lock:
            self._record(change, own_seq=0)

    def record_own(self, changes: Iterable[Change]) -> int:
        """Committed changes this process just wrote; returns their sequence number."""
        with self._lock:
            self._own_seq += 1
            for change in changes:
                self._record(change, own_seq=self._own_seq)
            return self._own_seq

    def _record(self, change: Change, own_seq: int) -> None:
        self._highest = max(self._highest, change.txid)
        for subscriber in self._subscribers:
            subscriber(change, own_seq)
        self._bump(self._entities, change.entity, change, own_seq, self.max_entity_entries)
        if change.all_customers:
            self._bump(self._truncates, change.entity, change, own_seq, self.max_entity_entries)
        elif change.customer_id is not None:
            key = (change.entity, change.customer_id)
            self._bump(self._customers, key, change, own_seq, self.max_customer_entries)

    def _bump(self, table: OrderedDict, key, change: Change, own_seq: int, limit: int) -> None:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Entry()
        else:
            table.move_to_end(key)
        entry.txid = max(entry.txid, change.txid)
        if own_seq:
            entry.own_txid = max(entry.own_txid, change.txid)
            entry.own_seq = own_seq
        while len(table) > limit:
            _, dropped = table.popitem(last=False)  # least recently changed
            if self._floor is not None:
                # What it said is forgotten: files older than it must ask the database.
                self._floor = max(self._floor, dropped.txid + 1)

    # --- asking -------------------------------------------------------------------------

    def check(
        self,
        since: int,
        entities: Iterable[str],
        customer_id: int | None = None,
        shared: Iterable[str] = (),
        own_reflected: int = 0,
    ) -> Check:
        """Is there a relevant change with `txid >= since`?

        Relevant, as in the database check: a change to one of `entities`; for a customer's
        file (`customer_id`), only one naming that customer, a TRUNCATE, or a change to one of
        the `shared` tables. `own_reflected`: the `own_sequence` taken before the caller's last
        build of this file (own writes up to it are in the file already).
        """
        with self._lock:
            stale = own = False
            for entry in self._relevant(entities, customer_id, frozenset(shared)):
                if entry.txid >= since:
                    stale = True
                if entry.own_txid >= since and entry.own_seq > own_reflected:
                    own = True
                    break
            covered = self._floor is not None and since >= self._floor
            return Check(covered=covered, stale=stale or own, own=own)

    def _relevant(
        self, entities: Iterable[str], customer_id: int | None, shared: frozenset[str]
    ) -> Iterator[_Entry]:
        for entity in entities:
            any_change = self._entities.get(entity)
            if any_change is None:
                continue  # nothing recorded for the table: nothing more specific either
            if customer_id is None or entity in shared:
                yield any_change
                continue
            for entry in (
                self._truncates.get(entity),
                self._customers.get((entity, customer_id)),
            ):
                if entry is not None:
                    yield entry
