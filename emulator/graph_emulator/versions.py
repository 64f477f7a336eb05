"""The Marketing API versions the emulator serves, and how it answers the others, like Meta.

One table: the current versions are served; a deprecated one is still served, with Meta's
``X-Ad-Api-Version-Warning`` header naming its end date; a version older than every served one
has expired (code 2635); any other (a future ``v99.0``) is not a path Meta knows (code 2500).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from graph_emulator.wire import GraphError

__all__ = ["VERSION_WARNING_HEADER", "VersionTable"]

VERSION_WARNING_HEADER = "X-Ad-Api-Version-Warning"
_VERSION = re.compile(r"v(\d+)\.(\d+)")


def _number(version: str) -> tuple[int, int]:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise ValueError(f"not a Graph API version: {version!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class VersionTable:
    """Served versions: ``current`` ones and ``deprecated`` ones (version -> end date).

    Tests override it, e.g. ``VersionTable(current=("v27.0",), deprecated={"v26.0":
    "2026-09-01"})`` to see the product handle the deprecation warning of the SDK's version.
    """

    current: tuple[str, ...] = ("v26.0", "v27.0")
    deprecated: Mapping[str, str] = field(default_factory=lambda: {"v25.0": "2027-02-10"})

    def __post_init__(self) -> None:
        if not self.current:
            raise ValueError("a version table needs at least one current version")
        for version in (*self.current, *self.deprecated):
            _number(version)

    @property
    def latest(self) -> str:
        """The newest current version (what Meta's messages tell callers to upgrade to)."""
        return max(self.current, key=_number)

    def check(self, version: str, path: str) -> dict[str, str]:
        """The headers a call on ``version`` carries; raises Meta's error when not served."""
        if version in self.current:
            return {}
        if version in self.deprecated:
            return {
                VERSION_WARNING_HEADER: (
                    "The call is from a version of the Ads API which will be deprecated on "
                    f"{self.deprecated[version]}. Please upgrade to {self.latest}."
                )
            }
        oldest = min((*self.current, *self.deprecated), key=_number)
        if _number(version) < _number(oldest):
            raise GraphError(
                "(#2635) You are calling a deprecated version of the Ads API. "
                f"Please update to the latest version: {self.latest}.",
                code=2635,
            )
        raise GraphError(f"Unknown path components: {path}", code=2500)
