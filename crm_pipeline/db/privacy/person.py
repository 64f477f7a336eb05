"""Who a privacy request is about: every row reachable from one identifier.

From the identifier given (a customer id, an email, a phone or a PSID), the person is the
closure over their identifiers and links: the customer rows with one of their emails, phones or
PSIDs, the leads with one of their emails or phones or linked to one of those customers, the
conversations with one of their PSIDs or linked to those customers, and so on until nothing new
is found. Emails compare case-insensitively, phones by their digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from crm_pipeline.db.privacy.identifiers import (
    CONVERSATION,
    EMAIL,
    LEAD,
    PHONE,
    PSID,
    normalise,
)

SELECTORS = ("customer_id", EMAIL, PHONE, PSID)
_MAX_ROUNDS = 20  # the closure converges in two or three; this only bounds a pathological one
_DIGITS = "regexp_replace(coalesce({c}, ''), '\\D', '', 'g')"

_CUSTOMERS = text(
    "SELECT id, email, phone, fb_psid FROM customers WHERE id = ANY(:customer_ids)"
    " OR lower(btrim(email)) = ANY(:emails) OR fb_psid = ANY(:psids)"
    f" OR {_DIGITS.format(c='phone')} = ANY(:phones)"
)
_LEADS = text(
    "SELECT id, email, phone, customer_id FROM leads WHERE id = ANY(:lead_ids)"
    " OR customer_id = ANY(:customer_ids) OR lower(btrim(email)) = ANY(:emails)"
    f" OR {_DIGITS.format(c='phone')} = ANY(:phones)"
)
_CONVERSATIONS = text(
    "SELECT id, psid, customer_id FROM conversations WHERE id = ANY(:conversation_ids)"
    " OR customer_id = ANY(:customer_ids) OR psid = ANY(:psids)"
)


class PersonError(ValueError):
    """A privacy request that cannot be carried out as given."""


@dataclass
class Person:
    """The rows and identifiers of one person (normalised identifiers, never logged)."""

    customer_ids: set[int] = field(default_factory=set)
    lead_ids: set[str] = field(default_factory=set)
    conversation_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)  # digits
    psids: set[str] = field(default_factory=set)
    phone_forms: set[str] = field(default_factory=set)  # as stored, for matching JSON text
    found: bool = False  # some database row is about them

    def params(self) -> dict[str, list]:
        """The SQL parameters of the closure queries."""
        return {
            "customer_ids": sorted(self.customer_ids),
            "lead_ids": sorted(self.lead_ids),
            "conversation_ids": sorted(self.conversation_ids),
            "emails": sorted(self.emails),
            "phones": sorted(self.phones),
            "psids": sorted(self.psids),
        }

    def size(self) -> int:
        return sum(len(v) for v in self.params().values())

    def identifiers(self) -> dict[str, set[str]]:
        """Each kind of `erased_identifiers` and the values of this person."""
        return {
            EMAIL: self.emails,
            PHONE: self.phones,
            PSID: self.psids,
            LEAD: self.lead_ids,
            CONVERSATION: self.conversation_ids,
        }

    def _add(self, kind: str, value: str | None) -> None:
        if value is None:
            return
        norm = normalise(kind, value)
        if norm is None:
            return
        {EMAIL: self.emails, PHONE: self.phones, PSID: self.psids}[kind].add(norm)
        if kind == PHONE:
            self.phone_forms.add(value)


def _seed(selector: str, value: str) -> Person:
    person = Person()
    if selector == "customer_id":
        try:
            person.customer_ids.add(int(value))
        except ValueError:
            raise PersonError("--customer-id must be a number") from None
        return person
    if selector not in SELECTORS:
        raise PersonError(f"unknown selector {selector!r}; one of {', '.join(SELECTORS)}")
    if normalise(selector, value) is None:
        raise PersonError(f"that is not a usable {selector} (value not shown)")
    person._add(selector, value)
    return person


def _grow(conn: Connection, person: Person) -> None:
    params = person.params()
    for row in conn.execute(_CUSTOMERS, params):
        person.found = True
        person.customer_ids.add(row.id)
        person._add(EMAIL, row.email)
        person._add(PHONE, row.phone)
        person._add(PSID, row.fb_psid)
    for row in conn.execute(_LEADS, params):
        person.found = True
        person.lead_ids.add(row.id)
        person._add(EMAIL, row.email)
        person._add(PHONE, row.phone)
        if row.customer_id is not None:
            person.customer_ids.add(row.customer_id)
    for row in conn.execute(_CONVERSATIONS, params):
        person.found = True
        person.conversation_ids.add(row.id)
        person._add(PSID, row.psid)
        if row.customer_id is not None:
            person.customer_ids.add(row.customer_id)


def find_person(conn: Connection, selector: str, value: str, *, max_customers: int = 1) -> Person:
    """Every row and identifier of the person `selector` = `value` names, in `conn`'s snapshot.

    Raises PersonError when the closure reaches more than `max_customers` customer rows (a
    shared phone, say): the caller must then name the customer or allow it explicitly.
    """
    person = _seed(selector, value)
    for _ in range(_MAX_ROUNDS):
        before = person.size()
        _grow(conn, person)
        if person.size() == before:
            break
    if len(person.customer_ids) > max_customers:
        raise PersonError(
            f"that {selector.replace('_', ' ')} reaches {len(person.customer_ids)} customers (a"
            " shared identifier?): erase one customer by id, or allow several explicitly"
            " (--allow-multiple-customers, or allow_multiple_customers=true on the API)"
        )
    return person
