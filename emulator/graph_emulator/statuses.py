"""Campaign, ad set and ad statuses: how Meta derives ``effective_status`` from the hierarchy.

``status`` is what the advertiser set on the object; ``effective_status`` is what Meta reports
after looking at the parents (an active ad in a paused ad set is ``ADSET_PAUSED``). The
emulator's :meth:`~graph_emulator.data.EmulatorData.set_status` hook edits statuses through
:func:`apply_status`.
"""

from __future__ import annotations

from typing import Any

from graph_emulator.wire import param_error

__all__ = ["HIDDEN_BY_DEFAULT", "KNOWN", "SETTABLE", "apply_status", "effective", "status_set"]

# The statuses a test or bench may set on an object.
SETTABLE = frozenset({"ACTIVE", "PAUSED", "ARCHIVED", "DELETED"})
# Meta leaves objects in these effective statuses out of edges and insights unless a filter on
# effective_status asks for them.
HIDDEN_BY_DEFAULT = frozenset({"DELETED", "ARCHIVED"})
# Every effective_status value Meta documents (filter values are checked against these).
KNOWN = frozenset(
    {
        "ACTIVE",
        "PAUSED",
        "DELETED",
        "ARCHIVED",
        "PENDING_REVIEW",
        "DISAPPROVED",
        "PREAPPROVED",
        "PENDING_BILLING_INFO",
        "CAMPAIGN_PAUSED",
        "ADSET_PAUSED",
        "IN_PROCESS",
        "WITH_ISSUES",
    }
)


def effective(own_status: str, parent_effective: str, parent_kind: str) -> str:
    """Meta reports a paused parent through the child's effective_status (e.g. CAMPAIGN_PAUSED)."""
    if own_status != "ACTIVE":
        return own_status
    if parent_effective == "PAUSED":
        return f"{parent_kind}_PAUSED"
    # ACTIVE, or a grandparent's state (CAMPAIGN_PAUSED, DELETED) that propagated to the parent.
    return parent_effective


def apply_status(
    campaigns: list[dict],
    adsets: list[dict],
    ads: list[dict],
    object_id: str,
    status: str,
    stamp: str,
) -> dict | None:
    """Set ``status`` on the campaign, ad set or ad ``object_id`` of one account, in place.

    DELETED and ARCHIVED give the object's ad sets and ads the same effective_status (the
    emulator's simplification of Meta's cascade); ACTIVE and PAUSED recompute the children from
    their own status. Every object whose status or effective_status changes gets
    ``updated_time = stamp`` (the edited object always). Returns the edited object, or None when
    ``object_id`` is not in these lists.
    """
    by_id = {obj["id"]: obj for obj in campaigns + adsets + ads}
    target = by_id.get(object_id)
    if target is None:
        return None
    target["status"] = status
    target["effective_status"] = _own_effective(target, by_id)
    target["updated_time"] = stamp
    for child in _descendants(target, adsets, ads):
        parent = by_id[child["adset_id"] if "adset_id" in child else child["campaign_id"]]
        if status in HIDDEN_BY_DEFAULT:
            new = status
        else:
            new = effective(child["status"], parent["effective_status"], _kind(parent))
        if new != child["effective_status"]:
            child["effective_status"] = new
            child["updated_time"] = stamp
    return target


def _own_effective(obj: dict, by_id: dict[str, dict]) -> str:
    if "adset_id" in obj:
        return effective(obj["status"], by_id[obj["adset_id"]]["effective_status"], "ADSET")
    if "campaign_id" in obj:
        return effective(obj["status"], by_id[obj["campaign_id"]]["effective_status"], "CAMPAIGN")
    return obj["status"]


def _descendants(target: dict, adsets: list[dict], ads: list[dict]) -> list[dict]:
    """The target's ad sets then ads, parents before children (so recomputing cascades)."""
    if "adset_id" in target:
        return []
    if "campaign_id" in target:
        return [ad for ad in ads if ad["adset_id"] == target["id"]]
    return [s for s in adsets if s["campaign_id"] == target["id"]] + [
        ad for ad in ads if ad["campaign_id"] == target["id"]
    ]


def _kind(parent: dict) -> str:
    return "ADSET" if "campaign_id" in parent else "CAMPAIGN"


def status_set(value: Any, name: str) -> set[str]:
    """The statuses of an ``effective_status`` ``IN`` filter; anything else is code 100."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise param_error(f"Filter {name} IN takes a list of statuses")
    unknown = [v for v in value if v not in KNOWN]
    if unknown:
        raise param_error(f"Filtering value {unknown[0]} is invalid for field {name}")
    return set(value)
