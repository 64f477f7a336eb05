"""Page-size shrinking: Meta's "Please reduce the amount of data" is fixed by asking for less.

The request's parameter dict is the SDK cursor's own, so a halved ``limit`` sticks to every
later page of that edge; after enough successes it is doubled back towards the original.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DEFAULT_PAGE_SIZE", "PageSizes"]

# Meta's page size when a request names none.
DEFAULT_PAGE_SIZE = 25


@dataclass
class _PageState:
    params: dict  # kept alive so its id() stays unique while tracked
    original: int
    successes: int = 0


class PageSizes:
    """The ``limit`` of every shrunk request (by parameter dict) and its way back up."""

    _MAX_TRACKED = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: OrderedDict[int, _PageState] = OrderedDict()

    def shrink(self, params: dict | None, floor: int) -> bool:
        """Halve ``params['limit']`` (not below ``floor``); False when it cannot shrink."""
        if params is None:
            return False
        try:
            current = int(params.get("limit", DEFAULT_PAGE_SIZE))
        except (TypeError, ValueError):
            return False
        if current <= floor:
            return False
        with self._lock:
            state = self._pages.get(id(params))
            if state is None or state.params is not params:
                state = _PageState(params, original=current)
                self._pages[id(params)] = state
                while len(self._pages) > self._MAX_TRACKED:
                    self._pages.popitem(last=False)
            state.successes = 0
            params["limit"] = max(floor, current // 2)
        return True

    def succeeded(self, params: dict | None, restore_after: int) -> bool:
        """Count a success; every ``restore_after`` of them double a shrunk limit (True)."""
        if params is None:
            return False
        with self._lock:
            state = self._pages.get(id(params))
            if state is None or state.params is not params:
                return False
            state.successes += 1
            if state.successes < restore_after:
                return False
            current = int(params.get("limit", state.original))
            params["limit"] = min(state.original, current * 2)
            state.successes = 0
            if params["limit"] >= state.original:
                del self._pages[id(params)]
        return True
