"""The incremental Graph API streams of a Page: Lead Ads forms and leads, conversations.

Each reader takes a `GraphClient` (governed, SDK-based) and a watermark, and asks Meta for as
little as possible: `filtering` on `time_created` where the edge supports it, and for
conversations (newest first, no server-side filter) it stops paging at the watermark. Pass the
Page's own client (`page_tokens.PageClients`): Meta serves a Page's conversations only to a Page
access token. The ad objects are read by `object_reads`.
"""

import datetime as dt
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from facebook_business.adobjects.leadgenform import LeadgenForm
from facebook_business.adobjects.page import Page
from facebook_business.adobjects.unifiedthread import UnifiedThread

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.fields import (
    CONVERSATION_FIELDS,
    LEAD_FIELDS,
    LEAD_FORM_FIELDS,
    MESSAGE_FIELDS,
    nested_messages,
)
from crm_pipeline.facebook.validate import parse_meta_time

# The SDK's type checker does not know Meta's nested-field syntax or the platform enum as a
# string; both requests are valid Graph API calls, so its warnings are noise here.
for _noise in (r"conversations does not allow field messages\.", "value of platform might not be"):
    warnings.filterwarnings(
        "ignore",
        message=_noise,
        category=UserWarning,
        module=r"facebook_business\.utils\.api_utils",
    )


def _after(field_name: str, unix_seconds: int | None) -> dict:
    if unix_seconds is None:
        return {}
    return {"filtering": [{"field": field_name, "operator": "GREATER_THAN", "value": unix_seconds}]}


def iter_lead_forms(client: GraphClient, page_id: str) -> Iterator[dict]:
    """The page's lead forms."""
    page = Page(page_id, api=client.api)
    yield from client.iterate(
        lambda: page.get_lead_gen_forms(fields=list(LEAD_FORM_FIELDS), params={"limit": 100})
    )


def iter_leads(client: GraphClient, form_id: str, created_after: int | None) -> Iterator[dict]:
    """Leads of one form created after a unix time (all when None)."""
    form = LeadgenForm(form_id, api=client.api)
    params = {"limit": 100, **_after("time_created", created_after)}
    yield from client.iterate(lambda: form.get_leads(fields=list(LEAD_FIELDS), params=params))


def lead_forms_of(clients: Mapping[str, GraphClient]) -> list[tuple[str, dict]]:
    """(page id, form) of every lead form of every page, each page read with its own client."""
    return [
        (page, form) for page, client in clients.items() for form in iter_lead_forms(client, page)
    ]


def read_leads_of(
    clients: Mapping[str, GraphClient],
    forms: list[tuple[str, dict]],
    created_after: Mapping[str, int | None],
) -> list[dict]:
    """Leads of each (page, form) created after its form's unix time, with their form and page."""
    rows = []
    for page, form in forms:
        for lead in iter_leads(clients[page], form["id"], created_after.get(form["id"])):
            rows.append({"form_id": form["id"], **lead, "page_id": page})
    return rows


@dataclass
class ConversationBatch:
    """Conversations updated after the watermark, with their messages after it."""

    conversations: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)


def _psid(conversation: dict, page_id: str) -> str | None:
    for person in (conversation.get("participants") or {}).get("data", []):
        if str(person.get("id")) != str(page_id):
            return str(person.get("id"))
    return None


def read_conversations(
    client: GraphClient,
    page_id: str,
    updated_after: dt.datetime | None,
    *,
    message_page_size: int = 25,
) -> ConversationBatch:
    """Conversations (newest first) until one is at or before the watermark, with messages.

    Each conversation's first page of messages comes nested in the same call; only threads with
    more new messages than that page cost another call.
    """
    page = Page(page_id, api=client.api)
    fields = [*CONVERSATION_FIELDS, nested_messages(message_page_size)]
    batch = ConversationBatch()
    conversations = client.iterate(
        lambda: page.get_conversations(fields=fields, params={"platform": "messenger", "limit": 50})
    )
    for conv in conversations:
        updated = parse_meta_time(conv.get("updated_time"))
        if updated_after and updated and updated <= updated_after:
            break  # newest first: everything after this is older than the watermark
        thread = conv.pop("messages", None) or {}
        messages = list(thread.get("data", []))
        oldest = parse_meta_time(messages[-1].get("created_time")) if messages else None
        more = "next" in (thread.get("paging") or {})
        if more and (updated_after is None or (oldest and oldest > updated_after)):
            messages = list(_iter_thread_messages(client, conv["id"], updated_after))
        for message in messages:
            created = parse_meta_time(message.get("created_time"))
            if updated_after and created and created <= updated_after:
                continue
            batch.messages.append({**message, "conversation_id": conv["id"]})
        batch.conversations.append({**conv, "page_id": page_id, "psid": _psid(conv, page_id)})
    return batch


def read_conversations_of(
    clients: Mapping[str, GraphClient], updated_after: Mapping[str, dt.datetime | None]
) -> ConversationBatch:
    """:func:`read_conversations` of every page, each with its own client and watermark."""
    batch = ConversationBatch()
    for page, client in clients.items():
        got = read_conversations(client, page, updated_after.get(page))
        batch.conversations += got.conversations
        batch.messages += got.messages
    return batch


def _iter_thread_messages(
    client: GraphClient, conversation_id: str, after: dt.datetime | None
) -> Iterator[dict]:
    thread = UnifiedThread(conversation_id, api=client.api)
    for message in client.iterate(
        lambda: thread.get_messages(fields=list(MESSAGE_FIELDS), params={"limit": 100})
    ):
        created = parse_meta_time(message.get("created_time"))
        if after and created and created <= after:
            return  # newest first
        yield message
