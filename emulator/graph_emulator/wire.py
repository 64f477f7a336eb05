"""Graph API wire-format pieces shared by the emulator's routes: errors, fields, paging, filters."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from graph_emulator.faults import Fault

__all__ = [
    "FieldSpec",
    "GraphError",
    "check_fields",
    "decode_cursor",
    "encode_cursor",
    "error_for_fault",
    "page_items",
    "param_error",
    "parse_field_specs",
    "parse_fields",
    "parse_filtering",
    "parse_limit",
    "parse_name_list",
    "parse_time_range",
]


class GraphError(Exception):
    """An error to be answered with Meta's error body."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        status: int = 400,
        is_transient: bool = False,
        user_title: str | None = None,
        user_msg: str | None = None,
        eta_minutes: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_type = error_type
        self.subcode = subcode
        self.status = status
        self.is_transient = is_transient
        self.user_title = user_title
        self.user_msg = user_msg
        # Only for throttles: reported through X-Business-Use-Case-Usage, not in the body.
        self.eta_minutes = eta_minutes

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.is_transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def param_error(message: str) -> GraphError:
    return GraphError(f"(#100) {message}", code=100)


# -- faults ----------------------------------------------------------------------------------------

_RATE_DOCS = "https://developers.facebook.com/docs/graph-api/overview/rate-limiting"
# What each Business Use Case throttle is about, as Meta words it in the message.
_BUC_SUBJECTS = {
    80000: "ad-account (ads insights)",
    80001: "Page",
    80002: "Instagram account",
    80003: "ad-account (custom audience)",
    80004: "ad-account",
    80005: "lead generation",
    80006: "Messenger",
    80008: "WhatsApp Business account",
    80009: "catalog",
    80014: "catalog (batch)",
}
_DEFAULT_SUBCODES = {17: 2446079, 613: 1487742, **{c: 2446079 for c in range(80000, 80015)}}


def _throttle_message(code: int, subcode: int | None) -> str:
    if code == 4:
        return "(#4) Application request limit reached"
    if code == 17:
        return "(#17) User request limit reached"
    if code == 32:
        return "(#32) Page request limit reached"
    if code == 613:
        if subcode == 1487742:
            return (
                "(#613) There have been too many calls from this ad-account. "
                "Please wait a bit and try again."
            )
        return "(#613) Calls to this api have exceeded the rate limit."
    subject = _BUC_SUBJECTS.get(code, "business object")
    return (
        f"(#{code}) There have been too many calls to this {subject}. Wait a bit and try again. "
        f"For more info, please refer to {_RATE_DOCS}."
    )


def error_for_fault(fault: Fault) -> GraphError:
    """The Graph error (HTTP status and body) Meta answers with for one injected fault."""
    if fault.kind == "throttle":
        code = fault.code if fault.code is not None else 17
        subcode = fault.subcode if fault.subcode is not None else _DEFAULT_SUBCODES.get(code)
        return GraphError(
            _throttle_message(code, subcode),
            code=code,
            subcode=subcode,
            is_transient=True,
            user_title="Too Many API Calls",
            user_msg="There have been too many calls. Please wait a bit and try again.",
            eta_minutes=fault.eta_minutes,
        )
    if fault.kind == "transient":
        return GraphError(
            "An unexpected error has occurred. Please retry your request later.",
            code=fault.code or 2,
            subcode=fault.subcode,
            status=500,
            is_transient=True,
        )
    if fault.kind == "reduce_data":
        return GraphError(
            "Please reduce the amount of data you're asking for, then retry your request",
            code=1,
            subcode=fault.subcode,
            status=500,
        )
    if fault.kind == "invalid_token":
        return GraphError(
            "Invalid OAuth access token - Cannot parse access token",
            code=190,
            subcode=fault.subcode,
        )
    if fault.kind == "permission":
        code = fault.code or 200
        message = (
            "(#10) Application does not have permission for this action"
            if code == 10
            else "(#200) Requires ads_read permission to manage the object"
        )
        return GraphError(message, code=code, subcode=fault.subcode)
    raise ValueError(f"fault kind {fault.kind!r} is not a per-request error")


# -- cursors and paging ----------------------------------------------------------------------------


def encode_cursor(index: int) -> str:
    # Opaque to clients, like Meta's; a position is enough for the emulator's ordered lists.
    return base64.urlsafe_b64encode(f"emu:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, index = raw.partition(":")
        if prefix != "emu" or not index.isdigit():
            raise ValueError(raw)
        return int(index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise param_error(f"Invalid {name} cursor") from None


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise param_error("limit must be an integer") from None
    if limit < 1:
        raise param_error("limit must be a positive integer")
    return limit


def page_items(items: list[dict], url: str, params: dict[str, str], limit: int) -> dict[str, Any]:
    """Slice ``items`` into one cursor page with Meta's ``paging`` block.

    ``url`` is the absolute edge URL the ``next``/``previous`` links point at; like Meta's they
    repeat every parameter of ``params`` (token included), only the cursor changes.
    """
    if params.get("after"):
        start = decode_cursor(params["after"], "after") + 1
    elif params.get("before"):
        start = max(0, decode_cursor(params["before"], "before") - limit)
    else:
        start = 0
    page = items[start : start + limit]
    if not page:
        return {"data": []}

    end = start + len(page)
    paging: dict[str, Any] = {
        "cursors": {"before": encode_cursor(start), "after": encode_cursor(end - 1)}
    }
    base = {k: v for k, v in params.items() if k not in ("after", "before")}
    if start > 0:
        paging["previous"] = f"{url}?{urlencode({**base, 'before': paging['cursors']['before']})}"
    if end < len(items):
        paging["next"] = f"{url}?{urlencode({**base, 'after': paging['cursors']['after']})}"
    return {"data": page, "paging": paging}


# -- fields ----------------------------------------------------------------------------------------


def parse_fields(raw: str | None) -> list[str] | None:
    """Parse flat ``fields``: a comma-separated string or a JSON list string."""
    specs = parse_field_specs(raw)
    if specs is None:
        return None
    for spec in specs:
        if spec.limit is not None or spec.subfields is not None:
            raise param_error(f"Field {spec.name} does not support nested field expansion")
    return [spec.name for spec in specs]


@dataclass(frozen=True)
class FieldSpec:
    """One requested field, e.g. ``messages.limit(25){id,message}``."""

    name: str
    limit: int | None = None
    subfields: list[FieldSpec] | None = None


_FIELD_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
_MODIFIER = re.compile(r"\.([a-z_]+)\(([^()]*)\)")


def parse_field_specs(raw: str | None) -> list[FieldSpec] | None:
    """Parse ``fields`` including Graph field expansion (``edge.limit(n){sub,fields}``)."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise param_error("fields must be a comma-separated list or a JSON array") from None
        if not isinstance(items, list) or not all(isinstance(f, str) for f in items):
            raise param_error("fields must be a list of strings")
        text = ",".join(f for f in items if f.strip())
    specs, _ = _parse_spec_list(text, 0, closing=None)
    return specs


def _parse_spec_list(text: str, pos: int, closing: str | None) -> tuple[list[FieldSpec], int]:
    specs: list[FieldSpec] = []
    while True:
        while pos < len(text) and text[pos] in " ,":
            pos += 1
        if pos >= len(text):
            if closing is not None:
                raise param_error(f"Syntax error in fields: missing '{closing}'")
            return specs, pos
        if closing is not None and text[pos] == closing:
            return specs, pos + 1
        match = _FIELD_HEAD.match(text, pos)
        if match is None:
            raise param_error(f"Syntax error in fields near {text[pos : pos + 20]!r}")
        name, pos = match.group(1), match.end()
        limit = None
        while (modifier := _MODIFIER.match(text, pos)) is not None:
            key, value = modifier.groups()
            if key != "limit" or not value.strip().isdigit() or int(value) < 1:
                raise param_error(f"Unsupported field modifier .{key}({value}) on {name}")
            limit, pos = int(value), modifier.end()
        subfields = None
        if pos < len(text) and text[pos] == "{":
            subfields, pos = _parse_spec_list(text, pos + 1, closing="}")
        specs.append(FieldSpec(name, limit, subfields))
        if pos < len(text) and text[pos] not in ", }":
            raise param_error(f"Syntax error in fields near {text[pos : pos + 20]!r}")


def check_fields(fields: list[str], allowed: Any, node_type: str) -> None:
    for name in fields:
        if name not in allowed:
            raise param_error(
                f"Tried accessing nonexisting field ({name}) on node type ({node_type})"
            )


# -- parameters ------------------------------------------------------------------------------------


def parse_time_range(raw: str | None) -> tuple[date, date]:
    if not raw:
        raise param_error("time_range is required by the emulator (date_preset is unsupported)")
    try:
        value = json.loads(raw)
        since = date.fromisoformat(value["since"])
        until = date.fromisoformat(value["until"])
    except (ValueError, TypeError, KeyError):
        raise param_error(
            'time_range must be a JSON object {"since":"YYYY-MM-DD","until":"YYYY-MM-DD"}'
        ) from None
    if since > until:
        raise param_error("time_range: since must be on or before until")
    return since, until


def parse_filtering(raw: str | None, allowed: dict[str, set[str]]) -> list[tuple[str, str, Any]]:
    """Parse ``filtering`` into (field, operator, value) triples, checked against ``allowed``.

    ``allowed`` maps each filterable field to the operators the edge supports there; anything
    else is Meta's code 100.
    """
    if raw is None or raw.strip() in ("", "[]"):
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise param_error("filtering must be a JSON array of filter objects") from None
    if not isinstance(items, list):
        raise param_error("filtering must be a JSON array of filter objects")
    filters = []
    for item in items:
        if not isinstance(item, dict) or not {"field", "operator", "value"} <= set(item):
            raise param_error("Each filter must have field, operator and value")
        field, operator = item["field"], item["operator"]
        if field not in allowed:
            raise param_error(f"Filtering field {field} is invalid")
        if operator not in allowed[field]:
            raise param_error(f"Filtering operator {operator} is not supported for {field}")
        filters.append((field, operator, item["value"]))
    return filters


def unix_value(value: Any, field: str) -> int:
    """A filter value that must be unix seconds (an int, or digits in a string)."""
    if isinstance(value, bool):
        raise param_error(f"Filter value for {field} must be a unix timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise param_error(f"Filter value for {field} must be a unix timestamp")


def parse_name_list(raw: str | None, param: str) -> list[str]:
    """A list parameter (``breakdowns``...): comma-separated or a JSON list, as the SDK sends it.

    Blank names are dropped and repeats kept once, in their first position.
    """
    if raw is None or raw.strip() in ("", "[]"):
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise param_error(f"{param} must be a list of strings") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise param_error(f"{param} must be a list of strings")
    else:
        items = text.split(",")
    return list(dict.fromkeys(i.strip() for i in items if i.strip()))
