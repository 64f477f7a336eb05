"""Meta's identifiers: ad account nodes (``act_<digits>``) and Graph API versions (``v26.0``).

The one place that knows their shapes; ``crm_pipeline.config`` validates the environment with
it. (The Graph API emulator, a separate distribution, keeps its own copy.)
"""

from __future__ import annotations

import re

__all__ = [
    "AD_ACCOUNT_NODE",
    "API_VERSION",
    "account_node",
    "meta_account_id",
    "sdk_api_version",
    "version_key",
]

# An ad account as a Graph node: the id Meta reports in rows (`account_id`) with `act_` before it.
AD_ACCOUNT_NODE = re.compile(r"^act_\d+$")
API_VERSION = re.compile(r"^v\d+\.\d+$")
_PREFIX = "act_"


def account_node(account_id: str | int) -> str:
    """The Graph node of an ad account: ``act_<digits>``, given with or without the prefix."""
    text = str(account_id).strip()
    return text if text.startswith(_PREFIX) else f"{_PREFIX}{text}"


def meta_account_id(account_id: str | int) -> str:
    """The id Meta puts in rows' ``account_id`` (no ``act_`` prefix), from either form."""
    return str(account_id).strip().removeprefix(_PREFIX)


def sdk_api_version() -> str:
    """The Graph API version the installed facebook-business SDK is built for (e.g. ``v26.0``).

    What an unset ``FB_API_VERSION`` means everywhere: the newest version the SDK supports,
    so upgrading the SDK moves the pipeline to the newer version.
    """
    # Imported here: `crm_pipeline.config` imports this module and must stay light.
    from facebook_business.apiconfig import ads_api_config

    return str(ads_api_config["API_VERSION"])


def version_key(version: str) -> tuple[int, int] | None:
    """``v26.0`` as ``(26, 0)`` for ordering versions; None when it is not that shape."""
    if not API_VERSION.match(version):
        return None
    major, minor = version[1:].split(".")
    return int(major), int(minor)
