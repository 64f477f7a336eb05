"""One page of the customer list from the in-memory index: search, tier, sort, keyset paging.

Keyset paging: the cursor is the sort position of the last customer served (its sort value and
id), and the next page starts strictly after it. A customer inserted, updated or deleted between
two pages therefore never makes another customer repeat or go missing: the customers after the
cursor are the same set whatever happened before it. (The customer who moved may itself show up
again, or not at all, depending on where it moved.)

How a page is found, whichever is cheaper for the query:
- without a search, walking the sort order (of the tier, with a tier filter: each tier has its
  own) from the cursor: every step is a customer of the page, so `limit` steps;
- with a search matching few (its tokens, counted without walking them, are at most about
  sqrt(limit * n), where the two plans' costs meet), collecting those candidates and taking
  the first `limit` after the cursor;
- with a search matching many, walking the sort order and keeping the matches (about
  `limit * n / matches` steps when matches are spread out). When they are not (a search that
  follows the sort: `q=zeca` by name walks every earlier name), the walk gives up after as many
  steps as there are candidate tokens and the candidates are collected after all, so a page
  never costs more than about twice the better plan.

The search term is personal data: it is never logged, and the cursor (which holds a sort value,
such as a name) is masked in the access log (`crm_pipeline.logs`).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from crm_pipeline.api.customer_search import SORTS, Customer, CustomerSearch, digits, words

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUERY_CHARS = 200
MAX_CURSOR_CHARS = 1024
MIN_CANDIDATES = 256  # below this many, collecting candidates is always cheap
# A search's walk gives up after this many steps per candidate token: a step of the walk (a
# match check in Python) costs about three times what collecting a candidate does.
WALK_BUDGET = 0.3
CURSOR_VERSION = 1
_PHONE_LIKE = re.compile(r"^[0-9+().\-\s]+$")


class BadRequest(ValueError):
    """A parameter the list cannot be served with; the message says which and why (it never
    repeats the value, which may be personal data)."""


@dataclass(frozen=True)
class Search:
    """A case-insensitive prefix search: every word a prefix of a word of the name, or the
    whole term a prefix of the email, or its digits a prefix of the phone's digits."""

    text: str  # case-folded, trimmed
    words: tuple[str, ...]
    digits: str  # only for a phone-like term ("+1 555", "555-01"): else ""
    # Per word: it starts a word of the (case-folded) name. One regex search in C per word is
    # much cheaper than splitting every name walked past.
    patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, q: str | None) -> Search | None:
        """The search for parameter `q` (None when absent or blank)."""
        text = (q or "").strip().casefold()
        if not text:
            return None
        if len(text) > MAX_QUERY_CHARS:
            raise BadRequest(f"q is longer than {MAX_QUERY_CHARS} characters.")
        phone = digits(text) if _PHONE_LIKE.match(text) else ""
        found = tuple(words(text))
        patterns = tuple(re.compile(r"(?<!\w)" + re.escape(w)) for w in dict.fromkeys(found))
        return cls(text, found, phone, patterns)

    @property
    def single_word(self) -> bool:
        """Is the term one word? Then a customer with a token starting with it matches (a
        name word, the email, or the phone's digits: all count), no check needed."""
        return self.words == (self.text,)

    def matches(self, customer: Customer) -> bool:
        """Does `customer` match? (Called once per customer a walk passes: kept lean.)"""
        name = customer.name_key
        patterns = self.patterns
        if len(patterns) == 1:
            if patterns[0].search(name):
                return True
        elif patterns and all(p.search(name) for p in patterns):
            return True
        if customer.email_key.startswith(self.text):
            return True
        return bool(
            self.digits and customer.phone and digits(customer.phone).startswith(self.digits)
        )

    def prefixes(self, index: CustomerSearch) -> tuple[list[str], int]:
        """Token prefixes whose customers include every match (the name's most selective word,
        the email, the phone digits), and how many tokens they cover."""
        found: list[str] = []
        if self.words:
            found.append(min(set(self.words), key=index.count_prefix))
        if not any(ch.isspace() for ch in self.text):  # an email has no spaces
            found.append(self.text)
        if self.digits:
            found.append(self.digits)
        found = list(dict.fromkeys(found))
        return found, sum(index.count_prefix(p) for p in found)


@dataclass(frozen=True)
class Query:
    """One page request, validated."""

    sort: str
    limit: int
    after: tuple[Any, int] | None  # the cursor's position in the sort order
    search: Search | None
    tier: str | None

    @property
    def forward(self) -> bool:
        return self.sort == "name"  # see customer_search: the other orders are walked backward

    def wanted(self, customer: Customer) -> bool:
        """Does `customer` pass the filters?"""
        if self.tier is not None and customer.tier != self.tier:
            return False
        return self.search is None or self.search.matches(customer)


def parse_query(
    limit: int | None, cursor: str | None, q: str | None, tier: str | None, sort: str | None
) -> Query:
    """The query of the route's parameters; BadRequest with a clear message when one is wrong."""
    sort = sort or "name"
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}.")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}.")
    after = decode_cursor(cursor, sort) if cursor else None
    return Query(sort, limit, after, Search.parse(q), tier or None)


@dataclass(frozen=True)
class Page:
    """The customers of one page, and the cursor of the next (None: this is the last)."""

    customers: list[Customer]
    next_cursor: str | None


def page(index: CustomerSearch, query: Query) -> Page:
    """The page `query` asks for, from `index` as it is now."""
    with index.lock:
        found = _find(index, query)
    served = found[: query.limit]
    more = len(found) > query.limit
    return Page(served, encode_cursor(query.sort, served[-1]) if more else None)


def _find(index: CustomerSearch, query: Query) -> list[Customer]:
    """Up to `limit + 1` customers of the page, by the cheaper plan (module docstring)."""
    search = query.search
    if search is None:  # every step of the walk is a match
        return _walk(index, query, None) or []
    cap = max(MIN_CANDIDATES, math.isqrt((query.limit + 1) * max(len(index.customers), 1)))
    prefixes, tokens = search.prefixes(index)
    if tokens > cap:
        # The walk's budget costs about what collecting the candidates does: a page never
        # costs more than about twice the better plan's cost.
        found = _walk(index, query, int(WALK_BUDGET * tokens))
        if found is not None:
            return found
    candidates: set[int] = set()
    for prefix in prefixes:
        candidates.update(index.with_prefix(prefix))
    return _pick(index, query, candidates)


def _walk(index: CustomerSearch, query: Query, budget: int | None) -> list[Customer] | None:
    """Walk the sort order (the tier's, with a tier filter) from the cursor, keeping matches,
    up to `limit + 1`; None when `budget` steps found too few and the order goes on."""
    order = index.order(query.sort, query.tier)  # the tier's own order: no tier check
    customers, forward, wanted = index.customers, query.forward, query.limit + 1
    matches = query.search.matches if query.search is not None else None
    found: list[Customer] = []
    steps = order.after(query.after) if forward else order.before(query.after)
    for step, position in enumerate(steps):
        if step == budget:
            return None
        customer = customers[position[1] if forward else -position[1]]
        if matches is None or matches(customer):
            found.append(customer)
            if len(found) == wanted:
                break
    return found


def _pick(index: CustomerSearch, query: Query, candidates: set[int]) -> list[Customer]:
    """The first `limit + 1` matching candidates after the cursor, in sort order."""
    customers = index.customers
    found = [customers[i] for i in candidates if i in customers]
    if query.tier is not None:
        found = [c for c in found if c.tier == query.tier]
    if query.search is not None and not query.search.single_word:
        found = [c for c in found if query.search.matches(c)]
    sort, after = query.sort, query.after
    positions = [c.position(sort) for c in found]
    if after is not None:
        keep = after.__lt__ if query.forward else after.__gt__
        positions = [p for p in positions if keep(p)]
    choose = heapq.nsmallest if query.forward else heapq.nlargest
    # A position ends with the id (negated in the backward orders): it names its customer.
    return [customers[abs(p[1])] for p in choose(query.limit + 1, positions)]


# --- the cursor ------------------------------------------------------------------------------


def encode_cursor(sort: str, last: Customer) -> str:
    """The opaque cursor after `last` in the `sort` order."""
    raw = orjson.dumps([CURSOR_VERSION, sort, last.sort_value(sort), last.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """The sort position a cursor names; BadRequest when it is not one of ours, or was made for
    another sort order."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest("cursor is not a cursor this API issued.")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, made_for, value, customer_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("cursor is not a cursor this API issued.") from None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    valid = (
        version == CURSOR_VERSION
        and made_for in SORTS
        and type(customer_id) is int
        and (numeric if made_for == "revenue" else isinstance(value, str))
    )
    if not valid:
        raise BadRequest("cursor is not a cursor this API issued.")
    if made_for != sort:
        raise BadRequest(f"cursor was issued for sort={made_for}; repeat that sort with it.")
    return (value, customer_id) if sort == "name" else (value, -customer_id)
