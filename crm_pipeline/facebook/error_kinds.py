"""What kind of failure a Graph API error is: the governor's retry decision and the client's
error message both start here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

__all__ = [
    "FATAL_KINDS",
    "PERMISSION_CODES",
    "THROTTLE_CODES",
    "TOKEN_CODES",
    "Failure",
    "classify_error",
]

# Meta's rate-limit codes: app (4), user/ad account (17), page (32), API-specific (613) and the
# Business Use Case family 80000-80014.
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
# 190: invalid/expired/revoked access token; 102: invalid session.
TOKEN_CODES = frozenset({102, 190})
# 10: permission denied; 200-299: missing permission (ads_read, leads_retrieval, ...).
PERMISSION_CODES = frozenset({10, *range(200, 300)})
# Kinds no retry can fix.
FATAL_KINDS = frozenset({"token", "permission", "fatal"})

_REDUCE_DATA = "reduce the amount of data"
_RETRYABLE_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class Failure:
    """A failed call as the governor sees it.

    ``kind`` is ``throttle``, ``reduce_data``, ``transient``, ``token``, ``permission`` or
    ``fatal`` (anything else: a bad request, an unknown object).
    """

    kind: str
    code: int | None = None
    subcode: int | None = None
    http_status: int | None = None
    headers: Mapping[str, Any] | None = None


def classify_error(exc: BaseException) -> Failure | None:
    """Classify an SDK ``FacebookRequestError`` (or anything shaped like one) or a requests
    error; None for exceptions the governor knows nothing about (they propagate untouched)."""
    if isinstance(exc, _RETRYABLE_NETWORK_ERRORS):
        return Failure("transient")
    if isinstance(exc, requests.RequestException):
        return Failure("fatal")
    if not hasattr(exc, "api_error_code"):
        return None
    code = _integer(_attr(exc, "api_error_code"))
    status = _integer(_attr(exc, "http_status"))
    subcode = _attr(exc, "api_error_subcode")
    message = str(_attr(exc, "api_error_message") or "")
    transient = bool(_attr(exc, "api_transient_error"))
    headers = _attr(exc, "http_headers") or {}

    if code in TOKEN_CODES:
        kind = "token"
    elif code in PERMISSION_CODES:
        kind = "permission"
    elif code in THROTTLE_CODES or status == 429:
        kind = "throttle"
    elif code == 1 and _REDUCE_DATA in message.lower():
        kind = "reduce_data"
    elif code in (1, 2) or (status is not None and status >= 500) or transient:
        kind = "transient"
    else:
        kind = "fatal"
    return Failure(kind, code, subcode if isinstance(subcode, int) else None, status, headers)


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _attr(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    try:
        return value() if callable(value) else value
    except Exception:  # a half-parsed SDK error must not break classification
        return None
