"""Insights ``level``: which object each row describes (ad, ad set, campaign or account).

Rows above the ad level add up the ad rows of the same day: counts, spend (in cents) and every
action amount exactly, and ``reach`` too. Summing reach is the emulator's simplification: Meta
de-duplicates people reached by several ads, so its reach above the ad level can be lower than
the sum. ``frequency`` is recomputed from the summed numbers.
"""

from __future__ import annotations

from graph_emulator.labels import LABEL_LEVELS
from graph_emulator.wire import param_error

__all__ = ["LEVEL_IDS", "ID_FIELDS", "check_level_fields", "parse_level"]

# The id fields each level's rows carry, coarsest first.
LEVEL_IDS = {
    "account": ("account_id",),
    "campaign": ("account_id", "campaign_id"),
    "adset": ("account_id", "campaign_id", "adset_id"),
    "ad": ("account_id", "campaign_id", "adset_id", "ad_id"),
}
ID_FIELDS = LEVEL_IDS["ad"]
# Meta's default for an ad account's insights: one row for the whole account.
_DEFAULT_LEVEL = "account"


def parse_level(raw: str | None) -> str:
    """The ``level`` parameter (default ``account``); anything else is code 100."""
    level = raw or _DEFAULT_LEVEL
    if level not in LEVEL_IDS:
        raise param_error("param level must be one of {ad, adset, campaign, account}")
    return level


def check_level_fields(fields: list[str], level: str) -> None:
    """Refuse an id or name finer than the level (``ad_id`` at level campaign), as Meta does."""
    order = list(LEVEL_IDS)
    finer = [f for f in fields if f in ID_FIELDS and f not in LEVEL_IDS[level]] + [
        f for f in fields if f in LABEL_LEVELS and order.index(LABEL_LEVELS[f]) > order.index(level)
    ]
    if finer:
        raise param_error(
            f"{', '.join(finer)} cannot be requested at level {level}: the rows describe "
            f"{'the account' if level == 'account' else level + 's'}"
        )
