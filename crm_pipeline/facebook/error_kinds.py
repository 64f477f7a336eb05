"""What kind of failure a Graph API error is: the governor's retry decision and the client's
error message both start here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from crm_pipeline.facebook.ids import version_key

__all__ = [
    "EXPIRED_VERSION_CODES",
    "FATAL_KINDS",
    "PERMISSION_CODES",
    "THROTTLE_CODES",
    "TOKEN_CODES",
    "UNKNOWN_PATH_CODES",
    "Failure",
    "classify_error",
    "expired_version",
    "latest_version",
    "refused_fields",
    "unknown_path",
]

# Meta's rate-limit codes: app (4), user/ad account (17), page (32), API-specific (613) and the
# Business Use Case family 80000-80014.
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
# 190: invalid/expired/revoked access token; 102: invalid session.
TOKEN_CODES = frozenset({102, 190})
# 10: permission denied; 200-299: missing permission (ads_read, leads_retrieval, ...).
PERMISSION_CODES = frozenset({10, *range(200, 300)})
# 2635: "You are calling a deprecated version of the Ads API" (the version has expired).
EXPIRED_VERSION_CODES = frozenset({2635})
# 2500: "Unknown path components": what Meta answers for a version that does not exist.
UNKNOWN_PATH_CODES = frozenset({2500})
# Kinds no retry can fix: only a change of settings, field lists or SDK can.
FATAL_KINDS = frozenset(
    {"token", "permission", "expired_version", "unknown_path", "refused_field", "fatal"}
)

_EXPIRED_WORDING = "deprecated version"
_VERSION_IN_TEXT = re.compile(r"\bv\d+\.\d+\b")
# Code 100 wordings that name one field Meta no longer accepts (insights; object nodes/edges).
_FIELD = r"[\w.:-]+"
_REFUSED_FIELDS = (
    re.compile(
        rf"(?:\(#100\)\s*)?({_FIELD}(?:,\s*{_FIELD})*) (?:is|are) not valid for fields param",
        re.IGNORECASE,
    ),
    re.compile(rf"Tried accessing nonexisting field \(({_FIELD})\)", re.IGNORECASE),
)

_REDUCE_DATA = "reduce the amount of data"
_RETRYABLE_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class Failure:
    """A failed call as the governor sees it.

    ``kind`` is ``throttle``, ``reduce_data``, ``transient``, ``token``, ``permission``,
    ``expired_version`` (code 2635), ``unknown_path`` (code 2500: an unknown version or edge),
    ``refused_field`` (code 100 naming a field) or ``fatal`` (anything else: a bad request, an
    unknown object).
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
    elif expired_version(code, message):
        kind = "expired_version"
    elif unknown_path(code):
        kind = "unknown_path"
    elif refused_fields(code, message):
        kind = "refused_field"
    elif code in THROTTLE_CODES or status == 429:
        kind = "throttle"
    elif code == 1 and _REDUCE_DATA in message.lower():
        kind = "reduce_data"
    elif code in (1, 2) or (status is not None and status >= 500) or transient:
        kind = "transient"
    else:
        kind = "fatal"
    return Failure(kind, code, subcode if isinstance(subcode, int) else None, status, headers)


def expired_version(code: int | None, message: str) -> bool:
    """Meta refuses the API version in the URL: it has expired (code 2635, or its wording)."""
    return code in EXPIRED_VERSION_CODES or _EXPIRED_WORDING in message.lower()


def unknown_path(code: int | None) -> bool:
    """Meta does not know a path component: an API version that does not exist, or an edge."""
    return code in UNKNOWN_PATH_CODES


def refused_fields(code: int | None, message: str) -> tuple[str, ...]:
    """The fields a code-100 error says Meta does not accept (removed or misspelt), if any."""
    if code != 100:
        return ()
    for pattern in _REFUSED_FIELDS:
        found = pattern.search(message)
        if found:
            return tuple(name.strip() for name in found.group(1).split(","))
    return ()


def latest_version(message: str) -> str | None:
    """The newest version an error or warning names ("Please update to ... v27.0."), if any."""
    return max(_VERSION_IN_TEXT.findall(message), key=version_key, default=None)


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _attr(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    try:
        return value() if callable(value) else value
    except Exception:  # a half-parsed SDK error must not break classification
        return None
