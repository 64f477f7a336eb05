"""Access tokens: the system user's token, and the Page access token derived from it.

``GET /<page-id>?fields=access_token`` with the user's token returns a Page token; Messenger
reads (a Page's conversations, a conversation's messages) need that Page token, as on Meta,
while lead forms and leads accept either. The Page token is a pure function of the user token
and the Page id, so it is stable and never has to be stored. Tokens never reach a message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from graph_emulator.wire import GraphError

__all__ = [
    "PAGE",
    "USER",
    "authenticate",
    "not_for_page_tokens",
    "page_token",
    "page_token_required",
]

USER, PAGE = "user", "page"
_PREFIX = "EAAPAGE"
_SHAPE = re.compile(rf"{_PREFIX}[0-9a-f]{{40}}")


def page_token(user_token: str, page_id: str) -> str:
    """The Page access token the emulator hands out to ``user_token`` for ``page_id``."""
    digest = hmac.new(user_token.encode(), page_id.encode(), hashlib.sha256).hexdigest()
    return _PREFIX + digest[:40]


def authenticate(token: str | None, expected: str | None, page_id: str) -> str:
    """Which kind of token ``token`` is (:data:`USER` or :data:`PAGE`), or Meta's error.

    With no ``expected`` token every token is accepted, and one shaped like a Page token is
    one. The token is deliberately never echoed back, in messages or anywhere else.
    """
    if not token:
        raise GraphError(
            "An active access token must be used to query information about the current user.",
            code=2500,
        )
    if expected is None:
        return PAGE if _SHAPE.fullmatch(token) else USER
    if secrets.compare_digest(token.encode(), expected.encode()):
        return USER
    if secrets.compare_digest(token.encode(), page_token(expected, page_id).encode()):
        return PAGE
    raise GraphError("Invalid OAuth access token - Cannot parse access token", code=190)


def page_token_required() -> GraphError:
    """Meta's answer to a Messenger read made with a user token."""
    return GraphError("(#210) A page access token is required to request this resource.", code=210)


def not_for_page_tokens() -> GraphError:
    """A Page token used on an ad account (it carries no ads permission)."""
    return GraphError("(#200) Requires ads_read permission to manage the object", code=200)
