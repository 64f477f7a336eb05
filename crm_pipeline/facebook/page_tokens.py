"""Page access tokens: a Page's conversations and Lead Ads are read with the Page's own token.

Meta serves a Page's conversations only to a Page access token ("(#210) A page access token is
required"). The configured user or system-user token gets it with
``GET /<page-id>?fields=access_token``, sent through the governed client. :class:`PageClients`
asks once per page for the life of a Graph session and keeps the token only inside that page's
client (its SDK session), which redacts it, like ours, from every error. It is never logged,
never returned, never put in metadata.
"""

from __future__ import annotations

import threading

from facebook_business.adobjects.page import Page

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.error_kinds import TOKEN_CODES
from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded

__all__ = ["PAGE_PERMISSIONS", "PageClients", "PageTokenError"]

# What the configured token needs for a Page's token to read its leads and conversations.
PAGE_PERMISSIONS = (
    "pages_read_engagement",
    "pages_messaging",
    "leads_retrieval",
    "pages_manage_metadata",
)


class PageTokenError(GraphApiError):
    """The configured token cannot act as a Page (no such page, no task on it, no permission).

    Never retryable: it needs a change of configuration or of the token's permissions.
    """

    @property
    def retryable(self) -> bool:
        return False


class PageClients:
    """Each Page's client (the same server, app and governors, with the Page's token), made on
    first use and kept for the session: one token request per page."""

    def __init__(self, client: GraphClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._clients: dict[str, GraphClient] = {}

    def client_for(self, page_id: str) -> GraphClient:
        """The client that reads ``page_id`` with its Page access token.

        Raises :class:`PageTokenError` naming the page and the permissions needed when Meta
        does not give a Page token; token (190), throttle and passing errors propagate as they
        are (the first fails fast, the others are retried like any call).
        """
        with self._lock:
            if page_id not in self._clients:
                self._clients[page_id] = self._client.with_token(self._page_token(page_id))
            return self._clients[page_id]

    def _page_token(self, page_id: str) -> str:
        page = Page(page_id, api=self._client.api)
        try:
            self._client.request(lambda: page.api_get(fields=[Page.Field.access_token]))
        except GraphApiError as exc:
            if exc.retryable or exc.code in TOKEN_CODES or isinstance(exc, RateLimitBudgetExceeded):
                raise
            raise PageTokenError(
                _refused(page_id, f"Meta refused the request ({exc})"),
                code=exc.code,
                subcode=exc.subcode,
                http_status=exc.http_status,
                error_type=exc.error_type,
                fbtrace_id=exc.fbtrace_id,
            ) from None
        token = page.export_all_data().get("access_token")
        if not isinstance(token, str) or not token:
            raise PageTokenError(_refused(page_id, "Meta returned no access_token for it"))
        return token


def _refused(page_id: str, why: str) -> str:
    return (
        f"No Page access token for Page {page_id}: {why}. The token in FB_ACCESS_TOKEN must "
        "belong to a user or system user with a task on this Page and have the permissions "
        f"{', '.join(PAGE_PERMISSIONS)}; check the app's permissions and FB_PAGE_ID/FB_PAGE_IDS."
    )
