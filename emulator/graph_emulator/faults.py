"""A fault plan for the Graph API emulator: which calls fail, how, and how many times.

Tests build one with :class:`Fault` objects; a Dagster run that starts the bundled emulator reads
one from the ``CRM_EMULATOR_FAULTS`` environment variable (a JSON list of fault objects), e.g.::

    CRM_EMULATOR_FAULTS='[{"kind": "throttle", "code": 80000, "count": 3, "eta_minutes": 1},
                          {"kind": "async_fail", "count": 2}]'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["FAULT_KINDS", "THROTTLE_CODES", "Fault", "FaultPlan"]

FAULTS_ENV = "CRM_EMULATOR_FAULTS"
FAULT_KINDS = frozenset(
    {"throttle", "transient", "reduce_data", "async_fail", "invalid_token", "permission"}
)
# Meta's rate-limit codes: app (4), user (17), page (32), API-specific (613) and the Business Use
# Case family 80000-80014 (ads insights, pages, instagram, custom audience, ads management, ...).
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
PERMISSION_CODES = frozenset({10, 200})


@dataclass
class Fault:
    """One injected failure, hitting the next ``count`` matching calls.

    ``kind`` is one of :data:`FAULT_KINDS`. ``code``/``subcode`` choose the Graph error for
    ``throttle`` (default 17 / 2446079) and ``permission`` (default 200); ``eta_minutes`` is the
    ``estimated_time_to_regain_access`` a throttle reports (Meta counts it in minutes). ``path``
    restricts the fault to requests whose path contains that substring. For ``async_fail`` the
    count is the number of report runs that end in ``Job Failed``.
    """

    kind: str
    count: int = 1
    code: int | None = None
    subcode: int | None = None
    eta_minutes: int = 0
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}"
            )
        for name in ("count", "eta_minutes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"fault {name} must be an integer, got {value!r}")
        if self.count < 1:
            raise ValueError(f"fault count must be at least 1, got {self.count}")
        if self.eta_minutes < 0:
            raise ValueError(f"fault eta_minutes must not be negative, got {self.eta_minutes}")
        for name in ("code", "subcode"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"fault {name} must be an integer or null, got {value!r}")
        if self.kind == "throttle" and self.code is not None and self.code not in THROTTLE_CODES:
            raise ValueError(
                f"throttle code {self.code} is not a Meta rate-limit code "
                "(4, 17, 32, 613 or 80000-80014)"
            )
        if (
            self.kind == "permission"
            and self.code is not None
            and self.code not in (PERMISSION_CODES)
        ):
            raise ValueError(f"permission code must be 10 or 200, got {self.code}")
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError(f"fault path must be a string or null, got {self.path!r}")

    def matches(self, kinds: Collection[str] | None, path: str) -> bool:
        """Whether this fault applies to a call of one of ``kinds`` (any when None) on ``path``."""
        if kinds is not None and self.kind not in kinds:
            return False
        return self.path is None or self.path in path


class FaultPlan:
    """An ordered, thread-safe list of faults; each matching call consumes one count."""

    def __init__(self, faults: Collection[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.add(*faults)

    def add(self, *faults: Fault) -> None:
        """Append faults (copies: later changes to the arguments do not leak in)."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.extend(dataclasses.replace(f) for f in faults)

    def take(
        self, kind_filter: str | Collection[str] | None, method: str, path: str
    ) -> Fault | None:
        """Consume one count of the first fault matching the kind(s) and path; None when none.

        ``kind_filter`` is a kind, a collection of kinds, or None for any kind. ``method`` is
        accepted for symmetry with the request (faults do not filter on it). The returned fault
        is a copy with ``count=1``: the single hit that was consumed.
        """
        del method  # faults are keyed on path only; the parameter keeps call sites explicit
        kinds = {kind_filter} if isinstance(kind_filter, str) else kind_filter
        with self._lock:
            for fault in list(self._faults):
                if fault.count > 0 and fault.matches(kinds, path):
                    fault.count -= 1
                    if fault.count == 0:
                        # Tolerate a caller having cleared `remaining` meanwhile.
                        with contextlib.suppress(ValueError):
                            self._faults.remove(fault)
                    return dataclasses.replace(fault, count=1)
        return None

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    @property
    def remaining(self) -> list[Fault]:
        """The faults not yet used up, in order, with their remaining counts.

        This is the plan's own list: ``plan.remaining.clear()`` (like :meth:`clear`) cancels
        every pending fault. Exhausted faults are removed from it as they run out.
        """
        return self._faults

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __repr__(self) -> str:
        with self._lock:
            return f"FaultPlan({self._faults!r})"

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Parse a JSON list of fault objects; raises ValueError saying what is wrong."""
        try:
            items = json.loads(text)
        except ValueError as error:
            raise ValueError(f"fault plan is not valid JSON: {error}") from None
        if not isinstance(items, list):
            raise ValueError("fault plan must be a JSON list of fault objects")
        known = {f.name for f in dataclasses.fields(Fault)}
        faults = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"fault #{position} must be a JSON object, got {item!r}")
            unknown = sorted(set(item) - known)
            if unknown:
                raise ValueError(
                    f"fault #{position} has unknown keys {unknown}; allowed: {sorted(known)}"
                )
            if "kind" not in item:
                raise ValueError(f"fault #{position} has no 'kind'")
            try:
                faults.append(Fault(**item))
            except ValueError as error:
                raise ValueError(f"fault #{position}: {error}") from None
        return cls(faults)

    @classmethod
    def from_env(cls, variable: str = FAULTS_ENV) -> FaultPlan:
        """The plan in environment variable ``variable``; empty when it is unset or blank."""
        text = os.environ.get(variable, "")
        if not text.strip():
            return cls()
        try:
            return cls.from_json(text)
        except ValueError as error:
            raise ValueError(f"{variable}: {error}") from None
