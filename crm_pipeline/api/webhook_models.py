"""Pydantic models of Meta's Page webhook entries (Lead Ads `leadgen`, Messenger messages).

A signed delivery is `{"object": "page", "entry": [...]}`; each entry is validated on its own
so one malformed entry never sinks the others (see `crm_pipeline.api.webhooks`):

- Lead Ads: `{"id": <page>, "time": <unix s>, "changes": [{"field": "leadgen", "value":
  {"leadgen_id", "page_id", "form_id", "ad_id", "adgroup_id", "created_time": <unix s>}}]}`.
- Messenger: `{"id": <page>, "time": <unix ms>, "messaging": [{"sender": {"id"}, "recipient":
  {"id"}, "timestamp": <unix ms>, "message": {"mid", "text", "is_echo"}}]}`. Events without a
  `message` (reads, deliveries, postbacks, reactions) are not ours to keep and are not checked
  beyond being objects.

Meta sends numeric ids as strings, sometimes as JSON integers: both are accepted and kept as
text. Floats, booleans, objects, lists, empty or over-long ids and non-digits are refused, as are
timestamps before 2004 or more than a day ahead, text that is not a string, and nesting deeper
than `MAX_DEPTH`. Other fields Meta adds are ignored here (the raw entry is stored as it came).

Error reasons name the place and the rule, never the offending value: they are stored in
`webhook_inbox.error` and must not carry personal data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    StrictBool,
    StrictStr,
    Tag,
    ValidationError,
)
from pydantic_core import PydanticCustomError

MAX_DEPTH = 20  # containers inside one entry (the entry itself is 1); Meta's go to about 11
MAX_ID_CHARS = 64
MAX_MID_CHARS = 512  # message ids are opaque (`m_…`, formerly `mid.…`), longer than numeric ids
EARLIEST = 1_072_915_200  # 2004-01-01T00:00:00Z: nothing of Meta's is older
FUTURE_SLACK_SECONDS = 86_400  # clocks differ; a day ahead is not a clock difference
_MAX_REASON_CHARS = 500


def _numeric_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("meta_id", "must be a string or integer id")
    text = str(value)
    if not text:
        raise PydanticCustomError("meta_id", "must not be empty")
    if len(text) > MAX_ID_CHARS:
        raise PydanticCustomError("meta_id", f"must be at most {MAX_ID_CHARS} characters")
    if not (text.isascii() and text.isdigit()):
        raise PydanticCustomError("meta_id", "must be a numeric id")
    return text


def _message_id(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("meta_mid", "must be a string")
    if not value:
        raise PydanticCustomError("meta_mid", "must not be empty")
    if len(value) > MAX_MID_CHARS:
        raise PydanticCustomError("meta_mid", f"must be at most {MAX_MID_CHARS} characters")
    if not all("!" <= c <= "~" for c in value):
        raise PydanticCustomError("meta_mid", "must be printable ASCII without spaces")
    return value


def _in_range(seconds: float) -> bool:
    return EARLIEST <= seconds <= time.time() + FUTURE_SLACK_SECONDS


def _integer(value: Any, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("meta_time", f"must be an integer unix time in {unit}")
    return value


def _unix_seconds(value: Any) -> int:
    if not _in_range(_integer(value, "seconds")):
        raise PydanticCustomError("meta_time", "out of range (before 2004 or in the future)")
    return value


def _unix_millis(value: Any) -> int:
    if not _in_range(_integer(value, "milliseconds") / 1000):
        raise PydanticCustomError("meta_time", "out of range (before 2004 or in the future)")
    return value


def _unix_seconds_or_millis(value: Any) -> int:
    # An entry's `time` is in seconds for `changes` and in milliseconds for `messaging`.
    number = _integer(value, "seconds or milliseconds")
    if not (_in_range(number) or _in_range(number / 1000)):
        raise PydanticCustomError("meta_time", "out of range (before 2004 or in the future)")
    return number


NumericId = Annotated[str, BeforeValidator(_numeric_id)]
MessageId = Annotated[str, BeforeValidator(_message_id)]
UnixSeconds = Annotated[int, BeforeValidator(_unix_seconds)]
UnixMillis = Annotated[int, BeforeValidator(_unix_millis)]
EntryTime = Annotated[int, BeforeValidator(_unix_seconds_or_millis)]


class _Meta(BaseModel):
    # Meta adds fields over time: unknown ones are ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)


class LeadgenValue(_Meta):
    """The `value` of a `leadgen` change: ids only; the answers are fetched later."""

    leadgen_id: NumericId
    page_id: NumericId | None = None
    form_id: NumericId | None = None
    ad_id: NumericId | None = None
    adgroup_id: NumericId | None = None  # the legacy name of ad_id, sent alongside it
    created_time: UnixSeconds | None = None


class LeadgenChange(_Meta):
    field: Literal["leadgen"]
    value: LeadgenValue


class OtherChange(_Meta):
    """A change of another subscribed field (feed, ...): acknowledged and ignored."""

    field: StrictStr


class Party(_Meta):
    id: NumericId  # a page id or a page-scoped user id (PSID)


class Message(_Meta):
    mid: MessageId
    text: StrictStr | None = None  # absent for attachments-only messages
    is_echo: StrictBool = False  # the Page's own message, echoed back


class MessageEvent(_Meta):
    sender: Party
    recipient: Party
    timestamp: UnixMillis
    message: Message


class OtherEvent(_Meta):
    """A read, delivery, postback, reaction, ...: acknowledged and ignored."""


# The tags of the unions below appear in pydantic's error locations; `reason` drops them.
_TAGS = frozenset({"leadgen-change", "other-change", "message-event", "other-event"})


def _change_kind(value: Any) -> str:
    leadgen = isinstance(value, dict) and value.get("field") == "leadgen"
    return "leadgen-change" if leadgen else "other-change"


def _event_kind(value: Any) -> str:
    return "message-event" if isinstance(value, dict) and "message" in value else "other-event"


Change = Annotated[
    Annotated[LeadgenChange, Tag("leadgen-change")] | Annotated[OtherChange, Tag("other-change")],
    Discriminator(_change_kind),
]
Event = Annotated[
    Annotated[MessageEvent, Tag("message-event")] | Annotated[OtherEvent, Tag("other-event")],
    Discriminator(_event_kind),
]


class Entry(_Meta):
    """One entry of a Page notification: the changes or Messenger events of one page."""

    id: NumericId  # the page
    time: EntryTime | None = None
    changes: list[Change] = []
    messaging: list[Event] = []

    def leadgen(self) -> Iterator[tuple[int, LeadgenChange]]:
        for index, change in enumerate(self.changes):
            if isinstance(change, LeadgenChange):
                yield index, change

    def messages(self) -> Iterator[tuple[int, MessageEvent]]:
        for index, event in enumerate(self.messaging):
            if isinstance(event, MessageEvent):
                yield index, event

    def ignored(self) -> int:
        """Changes and events that are acknowledged but not kept."""
        return sum(isinstance(c, OtherChange) for c in self.changes) + sum(
            isinstance(e, OtherEvent) for e in self.messaging
        )

    def page_mismatch(self) -> str | None:
        """Why an event of this entry belongs to another page than the entry's, if one does.

        PSIDs are page-scoped: a message is linked to a conversation by (page, PSID), so an
        event that names another page would link a person across pages.
        """
        for index, change in self.leadgen():
            if change.value.page_id is not None and change.value.page_id != self.id:
                return f"entry.changes[{index}].value.page_id: not the entry's page"
        for index, event in self.messages():
            page_side = "sender" if event.message.is_echo else "recipient"
            if getattr(event, page_side).id != self.id:
                return f"entry.messaging[{index}].{page_side}.id: not the entry's page"
        return None


class Delivery(_Meta):
    """The envelope of a signed delivery; its entries are validated one by one."""

    object: Any = None
    entry: list[Any]


class WebhookAck(BaseModel):
    """The answer to a signed delivery (Meta only looks at the status code)."""

    stored: int
    duplicates: int
    ignored: int
    rejected: int


_MESSAGES = {
    "missing": "required",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "literal_error": "unexpected value",
}


def reason(error: ValidationError, prefix: str) -> str:
    """A short reason for `error`: where and what, never the value (it may be personal)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        where = prefix
        for segment in item["loc"]:
            if isinstance(segment, int):
                where += f"[{segment}]"
            elif segment not in _TAGS:
                where += f".{segment}"
        parts.append(f"{where}: {_MESSAGES.get(item['type'], item['msg'])}")
    text = parts[0] if len(parts) == 1 else f"{parts[0]} (and {len(parts) - 1} more)"
    return text[:_MAX_REASON_CHARS]


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value` nests containers more than `limit` levels (it counts as level 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def nul_location(value: Any, prefix: str) -> str | None:
    """Where the first U+0000 is (in a string or a key), or None. `value` must not be too deep.

    Keys that are not plain field names are shown as `*`: a location names no content.
    """
    if isinstance(value, str):
        return prefix if "\x00" in value else None
    if isinstance(value, dict):
        for key, child in value.items():
            if "\x00" in key:
                return f"{prefix} (a key)"
            shown = key if _PLAIN_KEY.fullmatch(key) else "*"
            found = nul_location(child, f"{prefix}.{shown}")
            if found:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = nul_location(child, f"{prefix}[{index}]")
            if found:
                return found
    return None


TRUNCATED = "[cut: nested too deep]"


def storable(value: Any, limit: int = MAX_DEPTH, depth: int = 1) -> Any:
    """`value` as jsonb can hold it: U+0000 removed from strings and keys, cut below `limit`."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict | list) and depth > limit:
        return TRUNCATED
    if isinstance(value, dict):
        return {
            key.replace("\x00", ""): storable(child, limit, depth + 1)
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [storable(child, limit, depth + 1) for child in value]
    return value
