"""One parsed Graph API call, as handed to the emulator's route modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph_emulator.wire import page_items, parse_limit

__all__ = ["Call"]


@dataclass(frozen=True)
class Call:
    """A versioned request: ``/{version}/{node}/{edge}`` with its merged query/body params."""

    method: str
    path: str
    version: str
    node: str
    edge: str | None  # None for a node read; "a/b" when the path is deeper than one edge
    params: dict[str, str]
    base_url: str
    default_limit: int

    def limit(self) -> int:
        return parse_limit(self.params.get("limit"), self.default_limit)

    def page(self, items: list[dict]) -> dict[str, Any]:
        """One cursor page of ``items`` whose links point back at this call's path."""
        return page_items(items, f"{self.base_url}{self.path}", self.params, self.limit())

    def edge_url(self, node: str, edge: str) -> str:
        return f"{self.base_url}/{self.version}/{node}/{edge}"
