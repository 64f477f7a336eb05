"""What the token can see: ``/me``, its ad accounts and the Pages it manages.

This is how a client learns its ad accounts and Page from Meta, so it is how anything outside the
emulator learns the emulator's: ``GET /vX.Y/me/adaccounts?fields=id,account_id,name,currency,
timezone_name,account_status`` (cursor-paged) and ``GET /vX.Y/me/accounts?fields=id,name``.
"""

from __future__ import annotations

from typing import Any

from graph_emulator.ads import project_ad_account, select_fields
from graph_emulator.call import Call
from graph_emulator.data import EmulatorData
from graph_emulator.page_tokens import page_token
from graph_emulator.wire import check_fields, param_error, parse_fields

__all__ = ["MeRoutes"]

_PAGE_FIELDS = ("id", "name", "category", "tasks", "access_token")
_DEFAULT_PAGE_FIELDS = ("id", "name", "category", "tasks")
_USER_FIELDS = ("id", "name")


class MeRoutes:
    """Serves ``me`` (the token's system user) and its ``adaccounts`` and ``accounts`` edges."""

    def __init__(self, data: EmulatorData) -> None:
        self.data = data

    def handle(self, call: Call) -> dict[str, Any]:
        """``GET me``, ``GET me/adaccounts`` or ``GET me/accounts``; anything else is code 100."""
        if call.method != "GET":
            raise param_error(f"Unsupported {call.method.lower()} request on node type (User)")
        if call.edge is None:
            fields = parse_fields(call.params.get("fields")) or list(_USER_FIELDS)
            check_fields(fields, _USER_FIELDS, "User")
            return select_fields(self.data.user, fields)
        if call.edge == "adaccounts":
            accounts = self.data.ad_accounts()
            return call.page([project_ad_account(a, call.params) for a in accounts])
        if call.edge == "accounts":
            fields = parse_fields(call.params.get("fields")) or list(_DEFAULT_PAGE_FIELDS)
            check_fields(fields, _PAGE_FIELDS, "Page")
            token = call.params.get("access_token", "")
            # Meta hands out each Page's access token here too, when asked for.
            pages = [
                {**page, "access_token": page_token(token, page["id"])}
                for page in self.data.managed_pages()
            ]
            return call.page([select_fields(page, fields) for page in pages])
        raise param_error(f"Tried accessing nonexisting field ({call.edge}) on node type (User)")
