"""The Graph API's URL space as Starlette routes, shared by the HTTP app and the pure handler.

Each route names the kind of node it serves (``me``, ``ad_account``, ``object``); the emulator
answers each kind. Meta accepts unversioned paths, but the pipeline must always pin a version,
so an unversioned path only matches the last route, whose kind is ``unversioned`` (an error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match, Route

__all__ = ["KINDS", "METHODS", "graph_routes", "match_route"]

# Every method is routed: the Graph answers the ones it does not support with its own error.
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]


class _Pattern(Convertor[str]):
    def __init__(self, regex: str) -> None:
        self.regex = regex

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("graph_version", _Pattern(r"v\d+\.\d+"))
register_url_convertor("ad_account", _Pattern(r"act_\d+"))
register_url_convertor("graph_node", _Pattern(r"[^/]*"))  # may be empty: `/v26.0/` is no node

# (path, kind), tried in this order. An edge may be deeper than one segment (`a/b`).
_PATHS = (
    ("/{version:graph_version}/me", "me"),
    ("/{version:graph_version}/me/{edge:path}", "me"),
    ("/{version:graph_version}/{node:ad_account}", "ad_account"),
    ("/{version:graph_version}/{node:ad_account}/{edge:path}", "ad_account"),
    ("/{version:graph_version}/{node:graph_node}", "object"),
    ("/{version:graph_version}/{node:graph_node}/{edge:path}", "object"),
    ("/{path:path}", "unversioned"),
)
KINDS = frozenset(kind for _, kind in _PATHS)


def graph_routes(endpoint: Callable[[str], Callable[..., Any]]) -> list[Route]:
    """The routes, each served by ``endpoint(kind)`` (a Starlette request handler)."""
    return [Route(path, endpoint(kind), methods=METHODS, name=kind) for path, kind in _PATHS]


def match_route(routes: list[Route], method: str, path: str) -> tuple[str, dict[str, str]]:
    """The kind and path parameters of the route serving ``method path``, as Starlette finds it.

    ``path`` is the decoded path, without the query string.
    """
    scope = {"type": "http", "method": method, "path": path}
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route.name, child["path_params"]
    raise LookupError(f"no route for {method} {path}")  # the last route matches every path
