"""Seeded fake Page data: Lead Ads forms with their leads, Messenger conversations and messages.

Like the ad objects, it is a pure function of the seed and of the ads it may point leads at: no
wall clock anywhere, every timestamp lies in a fixed window. Records are kept in Graph wire format
(``created_time`` as ``2026-09-01T10:00:00+0000``) so the server only has to select fields.
"""

from __future__ import annotations

import copy
import hashlib
import random
from datetime import UTC, datetime, timedelta

__all__ = ["PageData", "graph_time", "parse_graph_time"]

PAGE_NAME = "Northwind Outdoor"
_FORM_ID_BASE = 1460000000000000
_LEAD_ID_BASE = 1500000000000000
_PSID_BASE = 7100000000000000
_FORMS = (
    ("Spring Catalogue Request", "ACTIVE", "how_soon_do_you_want_to_buy?", ("now", "1-3 months")),
    ("Free Consultation", "ACTIVE", "what_is_your_budget?", ("<500", "500-2000", ">2000")),
)
LEADS_PER_FORM = 30
CONVERSATIONS = 15
_LEADS_FROM = datetime(2026, 9, 1, tzinfo=UTC)
_LEADS_UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
_CHATS_FROM = datetime(2026, 10, 1, tzinfo=UTC)
_CHATS_UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
_FIRST = ("Ava", "Ben", "Chloe", "Dev", "Elif", "Finn", "Grace", "Hugo", "Iris", "Jonas", "Kira")
_LAST = ("Andersen", "Baptiste", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat")
_CUSTOMER_LINES = (
    "Hi, is the 2-person tent still in stock?",
    "Do you ship to Norway?",
    "What's the return policy?",
    "Can I change the size of my order?",
    "Thanks, that helps!",
    "When will my order arrive?",
)
_PAGE_LINES = (
    "Hello! Yes, it is in stock.",
    "We ship across Europe within 5 days.",
    "You can return anything within 30 days.",
    "Sure, send us your order number.",
    "You're welcome!",
)


def graph_time(moment: datetime) -> str:
    """Format a timestamp the way the Graph API does (``2026-01-05T10:00:00+0000``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def parse_graph_time(text: str) -> datetime:
    """Parse a Graph timestamp (``…+0000``) back into an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def _spread(rng: random.Random, start: datetime, end: datetime, count: int) -> list[datetime]:
    """``count`` distinct whole-second moments in ``[start, end)``, ascending."""
    seconds = int((end - start).total_seconds())
    return [start + timedelta(seconds=s) for s in sorted(rng.sample(range(seconds), count))]


def _message_id(seed: int, *parts: object) -> str:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).hexdigest()
    return f"m_{digest[:40]}"


class PageData:
    """Lead forms, leads and conversations of one Page. Not thread-safe: callers lock."""

    def __init__(self, seed: int, page_id: str, ads: list[dict]) -> None:
        self.seed = seed
        self.page_id = page_id
        self.page_name = PAGE_NAME
        self._ads = {ad["id"]: ad for ad in ads}
        self._names: dict[str, tuple[str, str]] = {}  # psid -> (name, email)
        self.forms: list[dict] = []
        self._leads: dict[str, list[dict]] = {}  # form id -> leads, any order
        self._lead_index: dict[str, dict] = {}
        self._conversations: dict[str, dict] = {}  # id -> conversation without messages
        self._messages: dict[str, list[dict]] = {}  # conversation id -> messages, any order
        self._next_lead = 0
        self._next_psid = 0
        rng = random.Random(f"page:{seed}")
        self._build_forms(rng, ads)
        self._build_conversations(rng)

    # -- lead ads --------------------------------------------------------------------------------

    def _build_forms(self, rng: random.Random, ads: list[dict]) -> None:
        for number, (name, status, question, answers) in enumerate(_FORMS, start=1):
            form_id = str(_FORM_ID_BASE + number)
            created = datetime(2026, 8, 20, 9, 0, tzinfo=UTC) + timedelta(days=number)
            self.forms.append(
                {
                    "id": form_id,
                    "name": name,
                    "status": status,
                    "locale": "en_US",
                    "created_time": graph_time(created),
                }
            )
            self._leads[form_id] = []
            for moment in _spread(rng, _LEADS_FROM, _LEADS_UNTIL, LEADS_PER_FORM):
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                self.add_lead(
                    form_id,
                    created_time=moment,
                    email=f"{first}.{last}{rng.randrange(10, 99)}@example.com".lower(),
                    full_name=f"{first} {last}",
                    phone=f"+4420{rng.randrange(10**7, 10**8)}",
                    ad_id=rng.choice(ads)["id"],
                    custom=(question, rng.choice(answers)),
                )

    def has_form(self, form_id: str) -> bool:
        return form_id in self._leads

    def leads(self, form_id: str) -> list[dict]:
        """Leads of one form, newest first (as Meta lists them)."""
        rows = sorted(self._leads[form_id], key=lambda r: (r["created_time"], r["id"]))
        return copy.deepcopy(rows[::-1])

    def lead(self, lead_id: str) -> dict | None:
        found = self._lead_index.get(lead_id)
        return copy.deepcopy(found) if found is not None else None

    def add_lead(
        self,
        form_id: str,
        *,
        created_time: datetime,
        email: str,
        full_name: str,
        phone: str,
        ad_id: str | None = None,
        custom: tuple[str, str] | None = None,
    ) -> dict:
        if form_id not in self._leads:
            raise KeyError(f"unknown lead form {form_id!r}")
        self._next_lead += 1
        field_data = [
            {"name": "email", "values": [email]},
            {"name": "full_name", "values": [full_name]},
            {"name": "phone_number", "values": [phone]},
        ]
        if custom is not None:
            field_data.append({"name": custom[0], "values": [custom[1]]})
        lead: dict = {"id": str(_LEAD_ID_BASE + self._next_lead), "created_time": ""}
        lead["created_time"] = graph_time(created_time)
        if ad_id is not None:
            ad = self._ads.get(ad_id)
            if ad is None:
                raise KeyError(f"unknown ad {ad_id!r}")
            lead.update(
                ad_id=ad["id"],
                ad_name=ad["name"],
                adset_id=ad["adset_id"],
                campaign_id=ad["campaign_id"],
            )
        # Organic leads (no ad) simply lack the ad fields, as on Meta.
        lead.update(form_id=form_id, is_organic=ad_id is None, platform="fb", field_data=field_data)
        self._leads[form_id].append(lead)
        self._lead_index[lead["id"]] = lead
        return copy.deepcopy(lead)

    # -- messenger -------------------------------------------------------------------------------

    def _new_psid(self) -> str:
        self._next_psid += 1
        return str(_PSID_BASE + self._next_psid * 7919)

    def _person(self, psid: str) -> dict:
        if psid == self.page_id:
            return {"id": psid, "name": self.page_name, "email": f"{psid}@facebook.com"}
        name, email = self._names.get(psid, (f"User {psid[-4:]}", f"{psid}@facebook.com"))
        return {"id": psid, "name": name, "email": email}

    def _build_conversations(self, rng: random.Random) -> None:
        starts = _spread(rng, _CHATS_FROM, _CHATS_UNTIL - timedelta(days=2), CONVERSATIONS)
        for number, start in enumerate(starts, start=1):
            psid = self._new_psid()
            self._names[psid] = (
                f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                f"{psid}@facebook.com",
            )
            conversation_id = f"t_{3300000000000000 + number * 101}"
            moment = start
            for turn in range(rng.randint(1, 8)):
                from_customer = turn % 2 == 0
                lines = _CUSTOMER_LINES if from_customer else _PAGE_LINES
                self._append(
                    conversation_id,
                    psid,
                    sender=psid if from_customer else self.page_id,
                    text=rng.choice(lines),
                    created_time=moment,
                )
                moment += timedelta(minutes=rng.randint(1, 600))

    def _append(
        self, conversation_id: str, psid: str, *, sender: str, text: str, created_time: datetime
    ) -> dict:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            conversation = {"id": conversation_id, "psid": psid, "updated_time": ""}
            self._conversations[conversation_id] = conversation
            self._messages[conversation_id] = []
        messages = self._messages[conversation_id]
        recipient = self.page_id if sender != self.page_id else conversation["psid"]
        stamp = graph_time(created_time)
        message = {
            "id": _message_id(self.seed, conversation_id, len(messages), stamp),
            "message": text,
            "from": self._person(sender),
            "to": {"data": [self._person(recipient)]},
            "created_time": stamp,
        }
        messages.append(message)
        conversation["updated_time"] = max(conversation["updated_time"], stamp)
        return message

    def conversation_for(self, psid: str) -> str | None:
        for conversation in self._conversations.values():
            if conversation["psid"] == psid:
                return conversation["id"]
        return None

    def add_message(
        self, conversation_id: str | None, *, psid: str, text: str, created_time: datetime
    ) -> dict:
        """A message from ``psid`` to the Page; creates the conversation when needed."""
        if conversation_id is None:
            conversation_id = self.conversation_for(psid)
        if conversation_id is None:
            conversation_id = f"t_{3390000000000000 + len(self._conversations) + 1}"
        message = self._append(
            conversation_id, psid, sender=psid, text=text, created_time=created_time
        )
        return {"conversation_id": conversation_id, **copy.deepcopy(message)}

    def has_conversation(self, conversation_id: str) -> bool:
        return conversation_id in self._conversations

    def conversations(self) -> list[dict]:
        """Conversations newest first, in wire form (without the nested messages edge)."""
        rows = sorted(
            self._conversations.values(), key=lambda c: (c["updated_time"], c["id"]), reverse=True
        )
        return [self._conversation_view(c) for c in rows]

    def conversation(self, conversation_id: str) -> dict | None:
        found = self._conversations.get(conversation_id)
        return self._conversation_view(found) if found is not None else None

    def _conversation_view(self, conversation: dict) -> dict:
        messages = self.messages(conversation["id"])
        return {
            "id": conversation["id"],
            "updated_time": conversation["updated_time"],
            "message_count": len(messages),
            "unread_count": 0,
            "snippet": messages[0]["message"] if messages else "",
            "link": f"/{self.page_id}/inbox/{conversation['id'].removeprefix('t_')}",
            "participants": {
                "data": [self._person(conversation["psid"]), self._person(self.page_id)]
            },
        }

    def message(self, message_id: str) -> dict | None:
        for messages in self._messages.values():
            for message in messages:
                if message["id"] == message_id:
                    return copy.deepcopy(message)
        return None

    def messages(self, conversation_id: str) -> list[dict]:
        """Messages of one conversation, newest first."""
        # A stable sort keeps insertion order among equal timestamps; reversed, the later wins.
        rows = sorted(self._messages[conversation_id], key=lambda m: m["created_time"])
        return copy.deepcopy(rows[::-1])
