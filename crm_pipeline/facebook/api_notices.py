"""Meta's notices that an API version (or an endpoint) is going away, as seen in responses.

Meta announces a version's end in the response, long before the version stops working:
``X-Ad-Api-Version-Warning: The call is from a version of the Ads API which will be deprecated
on <date>. Please upgrade to v<N>.0.``. The standard ``Deprecation`` and ``Sunset`` headers
(RFC 9745, RFC 8594) are read too, in case Meta (or a proxy) sends them.

A client keeps one :class:`ApiNotices`: every response, success or error, is read into it; the
same notice on every page of a sync is kept once, and only the first :data:`MAX_NOTICES`
distinct notices are kept (later ones are counted), so a long run cannot grow it without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_NOTICE_CHARS", "MAX_NOTICES", "NOTICE_HEADERS", "ApiNotices", "read_notices"]

# Header (lower case) -> the label a notice gets ("" for a header whose value says it all).
NOTICE_HEADERS = {
    "x-ad-api-version-warning": "",
    "deprecation": "Deprecation",
    "sunset": "Sunset",
}
MAX_NOTICES = 20
MAX_NOTICE_CHARS = 500


def read_notices(headers: Any) -> list[str]:
    """The notices in one response's headers (any case), as one line of text each."""
    found = []
    for name, value in _items(headers):
        label = NOTICE_HEADERS.get(str(name).lower())
        if label is None:
            continue
        text = " ".join(_text(value).split())  # one line, whatever the header folding
        if not text:
            continue
        text = f"{label}: {text}" if label else text
        if len(text) > MAX_NOTICE_CHARS:
            text = text[: MAX_NOTICE_CHARS - 1] + "…"
        found.append(text)
    return found


class ApiNotices:
    """The distinct notices one client has been sent, in the order first seen.

    ``redact`` is applied to every notice before it is kept (the client's secret redaction), so
    what is kept may go to logs and metadata. Thread-safe: concurrent calls share it.
    """

    def __init__(
        self, redact: Callable[[str], str] | None = None, *, limit: int = MAX_NOTICES
    ) -> None:
        self._redact = redact or (lambda text: text)
        self._limit = limit
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}  # an ordered set
        self._reported = 0
        self._dropped = 0

    def observe(self, headers: Any) -> None:
        """Keep the notices of one response's headers (None or no notices: nothing to do)."""
        for text in read_notices(headers):
            self.add(text)

    def add(self, text: str) -> None:
        """Keep ``text`` once; past the limit, only count it."""
        text = self._redact(text)
        with self._lock:
            if text in self._seen:
                return
            if len(self._seen) >= self._limit:
                self._dropped += 1
                return
            self._seen[text] = None

    @property
    def notices(self) -> list[str]:
        """Every distinct notice kept, oldest first."""
        with self._lock:
            return list(self._seen)

    @property
    def dropped(self) -> int:
        """How many further distinct notices arrived after the limit was reached."""
        with self._lock:
            return self._dropped

    def unreported(self) -> list[str]:
        """The notices not returned by an earlier call: each is reported (logged) once."""
        with self._lock:
            kept = list(self._seen)
            new, self._reported = kept[self._reported :], len(kept)
            return new


def _items(headers: Any) -> list[tuple[Any, Any]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        return list(items)
    except TypeError:
        return []


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""
