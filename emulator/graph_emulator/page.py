"""Page routes: lead forms and leads, Messenger conversations and messages, single nodes."""

from __future__ import annotations

from typing import Any

from graph_emulator.call import Call
from graph_emulator.data import EmulatorData
from graph_emulator.page_data import parse_graph_time
from graph_emulator.page_tokens import page_token, page_token_required
from graph_emulator.wire import (
    FieldSpec,
    page_items,
    param_error,
    parse_field_specs,
    parse_filtering,
    unix_value,
)

__all__ = ["PageRoutes"]

_FORM_FIELDS = ("id", "name", "status", "locale", "created_time")
_LEAD_FIELDS = (
    "id",
    "created_time",
    "ad_id",
    "ad_name",
    "adset_id",
    "campaign_id",
    "form_id",
    "field_data",
    "is_organic",
    "platform",
)
_CONVERSATION_FIELDS = (
    "id",
    "updated_time",
    "link",
    "message_count",
    "unread_count",
    "snippet",
    "participants",
    "messages",
)
_MESSAGE_FIELDS = ("id", "message", "from", "to", "created_time")
_PAGE_FIELDS = ("id", "name", "access_token")
# Messenger reads: Meta serves them only to a Page access token.
_MESSENGER_EDGES = frozenset({("page", "conversations"), ("conversation", "messages")})
_LEAD_FILTERS = {"time_created": {"GREATER_THAN", "LESS_THAN"}}
_NESTED_MESSAGE_LIMIT = 25  # Meta's default page size for an expanded edge


class PageRoutes:
    """Serves the Page, its lead forms, leads, conversations and messages."""

    def __init__(self, data: EmulatorData, *, require_page_token: bool = True) -> None:
        self.data = data
        # Meta serves Messenger reads only to a Page token; lead forms and leads take either.
        self.require_page_token = require_page_token

    def kind(self, node: str) -> str | None:
        """Which Page-side node ``node`` is (page, form, lead, conversation, message), if any."""
        if node == self.data.page_id:
            return "page"
        if node.startswith("t_"):
            return "conversation" if self.data.conversation(node) is not None else None
        if node.startswith("m_"):
            return "message" if self.data.message(node) is not None else None
        if not node.isdigit():
            return None
        if self.data.has_lead_form(node):
            return "form"
        if self.data.lead(node) is not None:
            return "lead"
        return None

    def handle(self, call: Call, kind: str, *, with_page_token: bool = False) -> dict[str, Any]:
        """Answer ``call`` on a Page-side node (``with_page_token``: it came with a Page token)."""
        edges = {
            ("page", "leadgen_forms"): self._forms,
            ("page", "conversations"): self._conversations,
            ("form", "leads"): self._leads,
            ("conversation", "messages"): self._messages,
        }
        if call.edge is None:
            return self._node(call, kind, with_page_token)
        route = edges.get((kind, call.edge))
        messenger = (kind, call.edge) in _MESSENGER_EDGES
        if messenger and self.require_page_token and not with_page_token:
            raise page_token_required()
        if route is None:
            node_type = {"page": "Page", "form": "LeadgenForm", "conversation": "UnifiedThread"}
            raise param_error(
                f"Tried accessing nonexisting field ({call.edge}) on node type "
                f"({node_type.get(kind, kind.title())})"
            )
        return route(call)

    # -- nodes -----------------------------------------------------------------------------------

    def _node(self, call: Call, kind: str, with_page_token: bool) -> dict[str, Any]:
        specs = parse_field_specs(call.params.get("fields"))
        if kind == "page":
            node = {"id": self.data.page_id, "name": self.data.page_name}
            if any(spec.name == "access_token" for spec in specs or ()):
                node["access_token"] = self._page_token(call, with_page_token)
            return _project(node, specs or _specs("id", "name"), _PAGE_FIELDS, "Page")
        if kind == "form":
            form = next(f for f in self.data.lead_forms() if f["id"] == call.node)
            return _project(form, specs or _specs("id", "name"), _FORM_FIELDS, "LeadgenForm")
        if kind == "lead":
            lead = self.data.lead(call.node) or {}
            default = _specs("created_time", "id", "field_data")
            return _project(lead, specs or default, _LEAD_FIELDS, "Lead")
        if kind == "message":
            message = self.data.message(call.node) or {}
            default = _specs("id", "created_time")
            return _project(message, specs or default, _MESSAGE_FIELDS, "Message")
        conversation = self.data.conversation(call.node) or {}
        return self._conversation_view(call, conversation, specs or _specs("id", "updated_time"))

    def _page_token(self, call: Call, with_page_token: bool) -> str:
        """The Page token for the caller: derived from its user token, or its own Page token."""
        token = call.params.get("access_token", "")
        return token if with_page_token else page_token(token, self.data.page_id)

    # -- lead ads --------------------------------------------------------------------------------

    def _forms(self, call: Call) -> dict[str, Any]:
        specs = parse_field_specs(call.params.get("fields")) or _specs("id", "name", "status")
        forms = [_project(f, specs, _FORM_FIELDS, "LeadgenForm") for f in self.data.lead_forms()]
        return call.page(forms)

    def _leads(self, call: Call) -> dict[str, Any]:
        leads = self.data.leads(call.node)
        for _, operator, value in parse_filtering(call.params.get("filtering"), _LEAD_FILTERS):
            bound = unix_value(value, "time_created")
            if operator == "GREATER_THAN":
                leads = [lead for lead in leads if _unix(lead["created_time"]) > bound]
            else:
                leads = [lead for lead in leads if _unix(lead["created_time"]) < bound]
        specs = parse_field_specs(call.params.get("fields")) or _specs(
            "created_time", "id", "field_data"
        )
        return call.page([_project(lead, specs, _LEAD_FIELDS, "Lead") for lead in leads])

    # -- messenger -------------------------------------------------------------------------------

    def _conversations(self, call: Call) -> dict[str, Any]:
        platform = call.params.get("platform", "messenger")
        if platform not in ("messenger", "instagram"):
            raise param_error(f"platform must be one of messenger, instagram; got {platform}")
        # The emulator's Page has no Instagram account linked: no Instagram threads.
        conversations = self.data.conversations() if platform == "messenger" else []
        specs = parse_field_specs(call.params.get("fields")) or _specs("id", "updated_time")
        return call.page([self._conversation_view(call, c, specs) for c in conversations])

    def _conversation_view(
        self, call: Call, conversation: dict, specs: list[FieldSpec]
    ) -> dict[str, Any]:
        flat = [s for s in specs if s.name != "messages"]
        view = _project(conversation, flat, _CONVERSATION_FIELDS, "UnifiedThread")
        for spec in specs:
            if spec.name == "messages":
                view["messages"] = self._nested_messages(call, conversation["id"], spec)
        return view

    def _nested_messages(self, call: Call, conversation_id: str, spec: FieldSpec) -> dict:
        """``messages.limit(n){fields}`` expanded inside a conversation, with its own paging."""
        subfields = spec.subfields or _specs("id", "created_time")
        rows = [
            _project(m, subfields, _MESSAGE_FIELDS, "Message")
            for m in self.data.messages(conversation_id)
        ]
        # The nested `next` link is a plain call to the messages edge, as on Meta.
        params = {
            "access_token": call.params.get("access_token", ""),
            "fields": _unparse(subfields),
            "limit": str(spec.limit or _NESTED_MESSAGE_LIMIT),
        }
        url = call.edge_url(conversation_id, "messages")
        return page_items(rows, url, params, spec.limit or _NESTED_MESSAGE_LIMIT)

    def _messages(self, call: Call) -> dict[str, Any]:
        specs = parse_field_specs(call.params.get("fields")) or _specs("id", "created_time")
        messages = self.data.messages(call.node)
        return call.page([_project(m, specs, _MESSAGE_FIELDS, "Message") for m in messages])


def _specs(*names: str) -> list[FieldSpec]:
    return [FieldSpec(name) for name in names]


def _unparse(specs: list[FieldSpec]) -> str:
    parts = []
    for spec in specs:
        text = spec.name
        if spec.limit is not None:
            text += f".limit({spec.limit})"
        if spec.subfields is not None:
            text += "{" + _unparse(spec.subfields) + "}"
        parts.append(text)
    return ",".join(parts)


def _project(
    record: dict, specs: list[FieldSpec], allowed: tuple[str, ...], node_type: str
) -> dict[str, Any]:
    """Select the requested fields of ``record`` (id always first); unknown fields are code 100.

    Fields the record lacks (an organic lead's ``ad_id``) are omitted, as Meta omits them.
    Sub-selections (``from{id,name}``) apply to objects and to ``{"data": [...]}`` lists.
    """
    out: dict[str, Any] = {}
    if "id" in record:
        out["id"] = record["id"]
    for spec in specs:
        if spec.name not in allowed:
            raise param_error(
                f"Tried accessing nonexisting field ({spec.name}) on node type ({node_type})"
            )
        if spec.limit is not None:
            raise param_error(f"Field {spec.name} does not support .limit()")
        if spec.name not in record:
            continue
        value = record[spec.name]
        if spec.subfields is not None:
            value = _select(value, spec.subfields)
        out[spec.name] = value
    return out


def _select(value: Any, specs: list[FieldSpec]) -> Any:
    names = [spec.name for spec in specs]
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        return {**value, "data": [_select(item, specs) for item in value["data"]]}
    if isinstance(value, dict):
        return {name: value[name] for name in names if name in value}
    return value


def _unix(graph_time: str) -> int:
    return int(parse_graph_time(graph_time).timestamp())
