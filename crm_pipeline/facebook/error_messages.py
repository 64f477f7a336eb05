"""What a Graph API error tells the person running the sync, and what to change.

Errors that only a change of settings, field lists or SDK can fix (a bad token, a missing
permission, an expired or unknown API version, a field Meta no longer accepts) get a message
that names the culprit and the fix; the rest keep Meta's words. Messages are built from Meta's
structured error fields only (never the request, which carries the token), and the client
redacts them again before they are raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from crm_pipeline.facebook import error_kinds
from crm_pipeline.facebook.ids import sdk_api_version, version_key

__all__ = ["FIELD_SOURCES", "Explained", "explain"]

# Where the fields we ask Meta for are listed.
FIELD_SOURCES = "crm_pipeline/facebook/fields.py or from the custom insights file"


@dataclass(frozen=True)
class Explained:
    """An error's message, and whether it is settled: no retry can fix it."""

    text: str
    settled: bool = False


def explain(code: int | None, message: str, detail: str, api_version: str) -> Explained:
    """The message for Meta's error ``code``/``message`` (``detail``: "HTTP 400, code=...")
    of a call made with ``api_version``."""
    if code in error_kinds.TOKEN_CODES:
        return Explained(
            f"Graph API rejected the access token ({detail}): {message}. "
            "Check FB_ACCESS_TOKEN: it is invalid, expired or revoked.",
            settled=True,
        )
    if code in error_kinds.PERMISSION_CODES:
        return Explained(
            f"Graph API denied permission ({detail}): {message}. The access token lacks a "
            "permission (e.g. ads_read, leads_retrieval, pages_read_engagement) or access "
            "to this object; check the app's permissions and FB_AD_ACCOUNT_IDS/FB_PAGE_ID.",
            settled=True,
        )
    if error_kinds.expired_version(code, message):
        return Explained(_expired(message, detail, api_version), settled=True)
    if error_kinds.unknown_path(code):
        return Explained(_unknown_path(message, detail, api_version), settled=True)
    fields = error_kinds.refused_fields(code, message)
    if fields:
        named = ", ".join(repr(f) for f in fields)
        what, it = ("the field", "it") if len(fields) == 1 else ("the fields", "them")
        return Explained(
            f"Meta refused {what} {named} at {api_version} ({detail}): {message}. Removed or "
            f"renamed by Meta, or misspelt: remove {it} from {FIELD_SOURCES}.",
            settled=True,
        )
    return Explained(f"Graph API error ({detail}): {message}")


def _expired(message: str, detail: str, used: str) -> str:
    """Version ``used`` has expired: name the newest one (from Meta's words) and the SDK's."""
    latest = error_kinds.latest_version(message)
    sdk = sdk_api_version()
    target = f"set FB_API_VERSION to {latest}" if latest else "set FB_API_VERSION to a current one"
    if _newer(sdk, used):
        target += f" (or unset it to use the SDK's own, {sdk})"
    return (
        f"Graph API version {used} has expired: Meta no longer serves it ({detail}: "
        f"{message}). To fix: {target} and upgrade facebook-business "
        "(pip install -U facebook-business), whose default is the newest version it supports."
    )


def _unknown_path(message: str, detail: str, used: str) -> str:
    """Code 2500: Meta's answer to a version that does not exist, as to an unknown edge."""
    sdk = sdk_api_version()
    if (used != sdk and used in message) or _newer(used, sdk):
        return (
            f"Graph API version {used} is not one Meta serves ({detail}: {message}). "
            f"To fix: set FB_API_VERSION to a released version such as {sdk} (the SDK's own), "
            "or unset it to use the SDK's own."
        )
    return (
        f"Graph API does not know this path ({detail}): {message}. Check the node ids "
        f"(FB_AD_ACCOUNT_IDS, FB_PAGE_ID) and that FB_API_VERSION ({used}) is a released one."
    )


def _newer(version: str, than: str) -> bool:
    a, b = version_key(version), version_key(than)
    return a is not None and b is not None and a > b
