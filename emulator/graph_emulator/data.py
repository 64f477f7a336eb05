"""Deterministic fake Meta marketing data for the Graph API emulator.

Everything here is a pure function of the seed: no wall clock, no global random state. Object
structure (accounts, campaigns, ad sets, ads) is drawn once from ``random.Random(seed)``; daily
insight numbers are derived from a hash of ``(seed, ad_id, date)`` so that any date range can be
asked for, in any order, and the same day always yields the same row.
"""

from __future__ import annotations

import copy
import hashlib
import random
import threading
from datetime import UTC, date, datetime, timedelta

from graph_emulator.accounts import DEFAULT_ACCOUNTS, account_table
from graph_emulator.daily_rows import AdIds, DailyRows
from graph_emulator.page_data import PageData, graph_time
from graph_emulator.statuses import SETTABLE, apply_status, effective

__all__ = ["EmulatorData", "normalize_account_id"]

_ACTIVE = 1  # Meta's account_status for an active ad account
_PAGE_ID = "2001"
_PAGE_CATEGORY = "Outdoor & Sporting Goods Company"
# What the system user may do on the Page (Meta's task names).
_PAGE_TASKS = ("ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING", "MODERATE", "MANAGE")
# The system user the token belongs to (`GET /me`).
_USER = {"id": "61550000000001", "name": "crm-pipeline system user"}
_CAMPAIGNS_PER_ACCOUNT = 2
_ADSETS_PER_CAMPAIGN = 2
_ADS_PER_ADSET = 3

# Distinct id ranges per object type keep ids unique across types and easy to eyeball in logs.
_CAMPAIGN_ID_BASE = 23850000000000000
_ADSET_ID_BASE = 23851000000000000
_AD_ID_BASE = 23852000000000000

# Fixed creation epoch: object timestamps must not depend on when the emulator runs.
_EPOCH = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)

_OBJECTIVES = ("OUTCOME_TRAFFIC", "OUTCOME_SALES", "OUTCOME_LEADS", "OUTCOME_AWARENESS")
_THEMES = ("Spring Sale", "Brand Lift", "Retargeting", "Lead Magnet", "New Arrivals", "Webinar")
_AUDIENCES = ("Lookalike 1%", "Interests", "Broad", "Website Visitors", "Engaged Users")
_CREATIVES = ("Carousel", "Video 15s", "Static Image", "Collection", "Story")


def normalize_account_id(account_id: str) -> str:
    """Return ``account_id`` in Graph node form (``act_<digits>``), accepting bare digits too."""
    account_id = str(account_id)
    return account_id if account_id.startswith("act_") else f"act_{account_id}"


class EmulatorData:
    """Seeded fake ad accounts (campaigns, ad sets, ads, daily ad-level insights) and one Page
    (lead forms with leads, Messenger conversations with messages).

    Identical seeds give identical output; everything is returned as fresh copies so callers may
    mutate them freely. Tests change the data through :meth:`touch`, :meth:`set_status`,
    :meth:`break_object`, :meth:`add_lead` and :meth:`add_message`, safely while the emulator
    serves it from other threads; each change bumps :attr:`generation`.

    ``accounts`` (default 2: ``act_1001``, ``act_1002``) adds ``act_1003``, … for benchmarks;
    the first two accounts are the same whatever the count.
    """

    def __init__(
        self,
        seed: int = 7,
        *,
        campaigns_per_account: int = _CAMPAIGNS_PER_ACCOUNT,
        adsets_per_campaign: int = _ADSETS_PER_CAMPAIGN,
        ads_per_adset: int = _ADS_PER_ADSET,
        accounts: int = DEFAULT_ACCOUNTS,
    ) -> None:
        # The shape knobs let benchmarks ask for big accounts (e.g. 5 x 10 x 10 = 500 ads) and
        # many of them; the defaults give the small data set the tests and the demo know.
        shape = (campaigns_per_account, adsets_per_campaign, ads_per_adset)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"campaigns/adsets/ads per parent must be positive ints, got {shape}")
        self._accounts = account_table(accounts)  # raises ValueError unless a positive int
        self.seed = seed
        self._shape = shape
        self._lock = threading.RLock()
        # Bumped by every change, so caches of derived answers know when they went stale.
        self._generation = 0
        self._campaigns: dict[str, list[dict]] = {}
        self._adsets: dict[str, list[dict]] = {}
        self._ads: dict[str, list[dict]] = {}
        # Insight numbers are a pure function of (seed, ad, day): computed once, then every page
        # of a paged range is a lookup, as on a real server, instead of rebuilding the range.
        self._daily = DailyRows(self._stream)
        self._broken: set[str] = set()  # ads Meta refuses to return (break_object)
        self._build()
        # Leads point at ads of any account: with more accounts the Page's leads differ from the
        # default data set's (its objects and insights do not).
        all_ads = [ad for ads in self._ads.values() for ad in ads]
        self._page = PageData(seed, _PAGE_ID, all_ads)

    # -- structure -------------------------------------------------------------------------------

    def _build(self) -> None:
        # One RNG drawn in account order: extra accounts come after 1001 and 1002, so asking for
        # more accounts changes nothing of the first two.
        builder = _ObjectBuilder(random.Random(self.seed), *self._shape)
        for number in self._accounts:
            act = f"act_{number}"
            self._campaigns[act], self._adsets[act], self._ads[act] = builder.account(number)

    # -- public accessors ------------------------------------------------------------------------

    @property
    def account_ids(self) -> list[str]:
        """Ad account node ids, e.g. ``['act_1001', 'act_1002']``."""
        return list(self._campaigns)

    @property
    def page_id(self) -> str:
        """The Facebook Page id the accounts advertise for."""
        return _PAGE_ID

    @property
    def user(self) -> dict:
        """The system user the access token belongs to (``/me``): ``id`` and ``name``."""
        return dict(_USER)

    def ad_accounts(self) -> list[dict]:
        """The ad accounts the token can see, in wire form, ordered by id (``/me/adaccounts``)."""
        return [self.ad_account(account_id) for account_id in self.account_ids]

    def ad_account(self, account_id: str) -> dict:
        """One ad account node in wire form; raises KeyError for unknown accounts.

        ``account_status`` is Meta's integer code (1: active); ``account_id`` is bare digits.
        """
        node = normalize_account_id(account_id)
        name, currency, timezone = self._accounts[node.removeprefix("act_")]
        return {
            "id": node,
            "account_id": node.removeprefix("act_"),
            "name": name,
            "currency": currency,
            "timezone_name": timezone,
            "account_status": _ACTIVE,
        }

    def managed_pages(self) -> list[dict]:
        """The Pages the token manages (``/me/accounts``): id, name, category and tasks."""
        page = {"id": _PAGE_ID, "name": self.page_name, "category": _PAGE_CATEGORY}
        return [{**page, "tasks": list(_PAGE_TASKS)}]

    def has_account(self, account_id: str) -> bool:
        """Whether ``account_id`` (``act_…`` or bare digits) exists in this data set."""
        return normalize_account_id(account_id) in self._campaigns

    def campaigns(self, account_id: str) -> list[dict]:
        """Campaign objects of one account, ordered by id. Raises KeyError for unknown accounts."""
        with self._lock:
            return copy.deepcopy(self._campaigns[normalize_account_id(account_id)])

    def adsets(self, account_id: str) -> list[dict]:
        """Ad set objects of one account, ordered by id. Raises KeyError for unknown accounts."""
        with self._lock:
            return copy.deepcopy(self._adsets[normalize_account_id(account_id)])

    def ads(self, account_id: str) -> list[dict]:
        """Ad objects of one account, ordered by id. Raises KeyError for unknown accounts."""
        with self._lock:
            return copy.deepcopy(self._ads[normalize_account_id(account_id)])

    def effective_statuses(self, account_id: str) -> dict[str, str]:
        """``effective_status`` of every campaign, ad set and ad of one account, by id."""
        act = normalize_account_id(account_id)
        with self._lock:
            tables = (self._campaigns[act], self._adsets[act], self._ads[act])
            return {obj["id"]: obj["effective_status"] for table in tables for obj in table}

    def touch(self, object_id: str, when: datetime, *, name: str | None = None) -> dict:
        """Edit a campaign, ad set or ad: set its ``updated_time`` to ``when`` (and its name).

        Returns the edited object; raises KeyError for an unknown id. Naive datetimes are UTC.
        """
        with self._lock:
            for table in (self._campaigns, self._adsets, self._ads):
                for objects in table.values():
                    for obj in objects:
                        if obj["id"] == object_id:
                            obj["updated_time"] = graph_time(when)
                            if name is not None:
                                obj["name"] = name
                            self._changed()
                            return copy.deepcopy(obj)
        raise KeyError(f"no campaign, ad set or ad with id {object_id!r}")

    def set_status(self, object_id: str, status: str, when: datetime) -> dict:
        """Set a campaign's, ad set's or ad's ``status`` (ACTIVE, PAUSED, ARCHIVED, DELETED).

        ``effective_status`` follows: DELETED and ARCHIVED pass down to the object's ad sets and
        ads as their effective_status (a simplification: Meta cascades deletes the same way, and
        archived children in the UI); ACTIVE and PAUSED recompute the children. Every object
        that changes gets ``updated_time = when``. Returns the edited object; KeyError when
        unknown, ValueError for another status.
        """
        if status not in SETTABLE:
            raise ValueError(f"status must be one of {sorted(SETTABLE)}, got {status!r}")
        with self._lock:
            for act in self._campaigns:
                tables = (self._campaigns[act], self._adsets[act], self._ads[act])
                edited = apply_status(*tables, object_id, status, graph_time(when))
                if edited is not None:
                    self._changed()
                    return copy.deepcopy(edited)
        raise KeyError(f"no campaign, ad set or ad with id {object_id!r}")

    def find_object(self, object_id: str) -> tuple[str, dict] | None:
        """``("Campaign" | "AdSet" | "Ad", object)`` for a campaign, ad set or ad id, or None."""
        with self._lock:
            for node_type, table in (
                ("Campaign", self._campaigns),
                ("AdSet", self._adsets),
                ("Ad", self._ads),
            ):
                for objects in table.values():
                    for obj in objects:
                        if obj["id"] == object_id:
                            return node_type, copy.deepcopy(obj)
        return None

    def break_object(self, ad_id: str) -> None:
        """Make Meta refuse to return ad ``ad_id`` (an incomplete creative): a test hook.

        Afterwards any read that would return the ad with more than its ``id`` fails with code
        100, subcode 2446289, as Meta fails on such an ad.
        """
        if self.find_object(ad_id) is None:
            raise KeyError(f"no ad with id {ad_id!r}")
        with self._lock:
            self._broken.add(ad_id)
            self._changed()

    def is_broken(self, object_id: str) -> bool:
        """Whether :meth:`break_object` was called for ``object_id``."""
        with self._lock:
            return object_id in self._broken

    def stream(self, *parts: object) -> random.Random:
        """A private RNG keyed by the seed and ``parts``: every derived number comes from one."""
        return self._stream(*parts)

    # -- page: lead ads and messenger ------------------------------------------------------------

    @property
    def page_name(self) -> str:
        """The Page's display name (as in conversation participants)."""
        return self._page.page_name

    def lead_forms(self) -> list[dict]:
        """The Page's lead forms (id, name, status, locale, created_time), oldest first."""
        with self._lock:
            return copy.deepcopy(self._page.forms)

    def has_lead_form(self, form_id: str) -> bool:
        with self._lock:
            return self._page.has_form(form_id)

    def leads(self, form_id: str) -> list[dict]:
        """Leads of one form in wire format, newest first. Raises KeyError for unknown forms."""
        with self._lock:
            return self._page.leads(form_id)

    def lead(self, lead_id: str) -> dict | None:
        """One lead by id, or None."""
        with self._lock:
            return self._page.lead(lead_id)

    def add_lead(
        self,
        form_id: str,
        *,
        created_time: datetime,
        email: str,
        full_name: str,
        phone: str,
        ad_id: str | None = None,
    ) -> dict:
        """Record a new lead on ``form_id``; ``ad_id=None`` makes it organic. Returns it."""
        with self._lock:
            lead = self._page.add_lead(
                form_id,
                created_time=created_time,
                email=email,
                full_name=full_name,
                phone=phone,
                ad_id=ad_id,
            )
            self._changed()
            return lead

    def conversations(self) -> list[dict]:
        """Page conversations, most recently updated first, with participants (no messages)."""
        with self._lock:
            return self._page.conversations()

    def conversation(self, conversation_id: str) -> dict | None:
        with self._lock:
            return self._page.conversation(conversation_id)

    def messages(self, conversation_id: str) -> list[dict]:
        """Messages of one conversation, newest first. Raises KeyError when unknown."""
        with self._lock:
            return self._page.messages(conversation_id)

    def message(self, message_id: str) -> dict | None:
        """One message by id (``m_…``), or None."""
        with self._lock:
            return self._page.message(message_id)

    def add_message(
        self, conversation_id: str | None, *, psid: str, text: str, created_time: datetime
    ) -> dict:
        """A message from user ``psid`` to the Page; returns it with its ``conversation_id``.

        With ``conversation_id`` None the user's existing conversation is used, or a new one is
        created; an unknown id creates that conversation. Its ``updated_time`` moves forward.
        """
        with self._lock:
            message = self._page.add_message(
                conversation_id, psid=psid, text=text, created_time=created_time
            )
            self._changed()
            return message

    def insights(self, account_id: str, since: date, until: date) -> list[dict]:
        """Ad-level daily insight rows for ``since..until`` inclusive, in Graph wire format.

        One row per ad per day, sorted by date then ad id. Counts are integer strings and spend a
        two-decimal string, exactly as the Graph API returns them; ``frequency`` is impressions /
        reach. ``actions`` (link clicks, leads, purchases), ``action_values`` and ``conversions``
        (purchases) are left out when empty, as Meta leaves them out. Raises KeyError for unknown
        accounts; returns ``[]`` when ``since > until``.
        """
        # Fresh row dicts (callers and test doubles replace or edit rows); the nested action
        # lists are shared and must be treated as read-only.
        return [dict(row) for row in self.shared_insights(account_id, since, until)]

    def shared_insights(self, account_id: str, since: date, until: date) -> list[dict]:
        """The rows of :meth:`insights`, but the stored dicts themselves: strictly read-only.

        For the emulator's routes, which build new dicts when they project rows, so that a page
        of a big range does not copy every row of the range.
        """
        return self._daily.rows(self._ad_ids(account_id), since, until)

    def served_insights(self, account_id: str, since: date, until: date) -> list[dict]:
        """The rows the insights routes serve for ``since..until``, strictly read-only: by
        default the stored rows themselves (the routes filter into new lists and project into
        new dicts, so a range's 15,000 rows are not copied per query).

        A test double that serves odd rows (a row without an id, a day Meta stopped reporting)
        overrides this, building on :meth:`insights`, whose rows are its own to edit.
        """
        return self.shared_insights(account_id, since, until)

    def prepare_insights(self, account_id: str, since: date, until: date) -> int:
        """Compute (warm) the insight numbers of every ad of one account for ``since..until``.

        The emulator computes each (ad, day) row on first use and stores it; a real Graph server
        has its numbers stored already. A benchmark calls this before its timed section so it
        measures the client and the wire, not the emulator's one-time data generation. Returns
        the number of rows; raises KeyError for unknown accounts.
        """
        return len(self.shared_insights(account_id, since, until))

    @property
    def generation(self) -> int:
        """A counter bumped by every change to the data: caches key their answers on it."""
        with self._lock:
            return self._generation

    def _changed(self) -> None:
        """Note a change (callers hold the lock), so answers cached before it go stale."""
        self._generation += 1

    def _ad_ids(self, account_id: str) -> list[AdIds]:
        # The ids are all a row needs, and never change: cheaper than deep-copying every ad.
        with self._lock:
            ads = self._ads[normalize_account_id(account_id)]  # ascending id order already
            return [(ad["account_id"], ad["campaign_id"], ad["adset_id"], ad["id"]) for ad in ads]

    def _stream(self, *parts: object) -> random.Random:
        """A private RNG keyed by the seed and ``parts`` (stable across processes and runs)."""
        key = ":".join(str(p) for p in (self.seed, *parts)).encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


class _ObjectBuilder:
    """Draws one account's campaigns, ad sets and ads from the seeded ``rng``, in a fixed order.

    The order of the draws is part of the data: changing it changes every object of every seed.
    """

    def __init__(
        self, rng: random.Random, campaigns: int, adsets_per_campaign: int, ads_per_adset: int
    ) -> None:
        self.rng = rng
        self.shape = (campaigns, adsets_per_campaign, ads_per_adset)
        self._counters = {"campaign": 0, "adset": 0, "ad": 0}

    def account(self, number: str) -> tuple[list[dict], list[dict], list[dict]]:
        """Campaigns, ad sets and ads of account ``act_<number>``, each ordered by id."""
        campaigns_per_account, adsets_per_campaign, ads_per_adset = self.shape
        campaigns, adsets, ads = [], [], []
        for c in range(1, campaigns_per_account + 1):
            campaigns.append(campaign := self._campaign(number, c))
            for s in range(1, adsets_per_campaign + 1):
                adsets.append(adset := self._adset(campaign, f"{c}.{s}"))
                ads.extend(self._ad(adset, f"{c}.{s}.{a}") for a in range(1, ads_per_adset + 1))
        return campaigns, adsets, ads

    def _next_id(self, kind: str, base: int) -> str:
        self._counters[kind] += 1
        return str(base + self._counters[kind])

    def _stamps(self) -> tuple[str, str]:
        created = _EPOCH + timedelta(minutes=self.rng.randrange(0, 60 * 24 * 3))
        updated = created + timedelta(minutes=self.rng.randrange(0, 60 * 24 * 7))
        return graph_time(created), graph_time(updated)

    def _campaign(self, number: str, position: int) -> dict:
        created, updated = self._stamps()
        status = "ACTIVE" if self.rng.random() < 0.8 else "PAUSED"
        return {
            "id": self._next_id("campaign", _CAMPAIGN_ID_BASE),
            "account_id": number,  # Meta returns bare digits here, without "act_".
            "name": f"{self.rng.choice(_THEMES)} {position} ({number})",
            "status": status,
            "effective_status": status,
            "objective": self.rng.choice(_OBJECTIVES),
            "created_time": created,
            "updated_time": updated,
        }

    def _adset(self, campaign: dict, position: str) -> dict:
        created, updated = self._stamps()
        status = "ACTIVE" if self.rng.random() < 0.8 else "PAUSED"
        return {
            "id": self._next_id("adset", _ADSET_ID_BASE),
            "account_id": campaign["account_id"],
            "campaign_id": campaign["id"],
            "name": f"{self.rng.choice(_AUDIENCES)} {position}",
            "status": status,
            "effective_status": effective(status, campaign["effective_status"], "CAMPAIGN"),
            # Budgets are minor currency units, as strings, like the Graph API.
            "daily_budget": str(self.rng.randrange(20, 200) * 100),
            "created_time": created,
            "updated_time": updated,
        }

    def _ad(self, adset: dict, position: str) -> dict:
        created, updated = self._stamps()
        status = "ACTIVE" if self.rng.random() < 0.85 else "PAUSED"
        return {
            "id": self._next_id("ad", _AD_ID_BASE),
            "account_id": adset["account_id"],
            "campaign_id": adset["campaign_id"],
            "adset_id": adset["id"],
            "name": f"{self.rng.choice(_CREATIVES)} {position}",
            "status": status,
            "effective_status": effective(status, adset["effective_status"], "ADSET"),
            "created_time": created,
            "updated_time": updated,
        }
