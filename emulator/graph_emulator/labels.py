"""Insight fields that name a row's objects: ``account_name``, ``campaign_name``,
``adset_name``, ``ad_name``, ``account_currency`` and ``objective``, looked up by the row's ids.

Like an id, a name is only available down to the call's level (no ``ad_name`` at level
campaign); ``objective`` belongs to the campaign, so account rows have none.
"""

from __future__ import annotations

from collections.abc import Sequence

from graph_emulator.data import EmulatorData

__all__ = ["LABELS", "LABEL_LEVELS", "labels"]

# Field -> (the row id it describes, the object attribute holding it).
LABELS = {
    "account_name": ("account_id", "name"),
    "account_currency": ("account_id", "currency"),
    "campaign_name": ("campaign_id", "name"),
    "objective": ("campaign_id", "objective"),
    "adset_name": ("adset_id", "name"),
    "ad_name": ("ad_id", "name"),
}
# Name field -> the level of the object it names (refused above that level, like its id).
LABEL_LEVELS = {"campaign_name": "campaign", "adset_name": "adset", "ad_name": "ad"}


class Labels:
    """The names of one account's objects, by id, read once per call."""

    def __init__(self, data: EmulatorData, account_id: str) -> None:
        account = data.ad_account(account_id)
        objects = data.campaigns(account_id) + data.adsets(account_id) + data.ads(account_id)
        self._by_id = {obj["id"]: obj for obj in objects}
        self._by_id[account["account_id"]] = account

    def of(self, row: dict, names: Sequence[str]) -> dict[str, str]:
        """The asked-for label fields of a row, from the ids it carries."""
        out = {}
        for name in names:
            id_field, attribute = LABELS[name]
            obj = self._by_id.get(row.get(id_field, ""), {})
            if attribute in obj:
                out[name] = obj[attribute]
        return out


def labels(data: EmulatorData, account_id: str) -> Labels:
    """A label lookup for one account."""
    return Labels(data, account_id)
