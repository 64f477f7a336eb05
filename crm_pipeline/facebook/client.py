"""A thin Graph API client on top of the official facebook-business SDK.

Each :class:`GraphClient` owns its own SDK session and ``FacebookAdsApi`` instance: nothing is
installed as the SDK's global default and the SDK's crash reporter is never enabled, so several
clients (for example one against Meta and one against the local emulator) can coexist safely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date
from urllib.parse import quote, quote_plus, urlsplit

import requests
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError

__all__ = [
    "AD_FIELDS",
    "ADSET_FIELDS",
    "CAMPAIGN_FIELDS",
    "INSIGHT_FIELDS",
    "GraphApiError",
    "GraphClient",
]

INSIGHT_FIELDS = (
    "account_id",
    "campaign_id",
    "adset_id",
    "ad_id",
    "date_start",
    "date_stop",
    "impressions",
    "clicks",
    "spend",
    "reach",
)
CAMPAIGN_FIELDS = (
    "id",
    "account_id",
    "name",
    "status",
    "objective",
    "created_time",
    "updated_time",
)
ADSET_FIELDS = (
    "id",
    "account_id",
    "campaign_id",
    "name",
    "status",
    "created_time",
    "updated_time",
)
AD_FIELDS = (
    "id",
    "account_id",
    "campaign_id",
    "adset_id",
    "name",
    "status",
    "created_time",
    "updated_time",
)

_API_VERSION = re.compile(r"^v\d+\.\d+$")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_REDACTED = "[REDACTED]"


class GraphApiError(RuntimeError):
    """A failed Graph API call.

    Attributes mirror Meta's error body: ``code``, ``subcode``, ``error_type``, ``fbtrace_id`` and
    ``is_transient``; ``http_status`` is None when no HTTP response was received (connection
    errors, which are reported as transient). The message never contains the access token or the
    app secret.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        is_transient: bool = False,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.is_transient = is_transient
        self.error_type = error_type
        self.fbtrace_id = fbtrace_id

    @property
    def retryable(self) -> bool:
        """Worth another try later: Meta says transient, a 5xx, or the generic codes 1 and 2.

        An invalid token (190), a permission error (10, 200-299) or a bad request is not.
        """
        return (
            self.is_transient
            or (self.http_status is not None and self.http_status >= 500)
            or self.code in (1, 2)
        )


class GraphClient:
    """Read ad-account data through the facebook-business SDK.

    ``graph_url`` replaces the SDK's ``https://graph.facebook.com`` (point it at the emulator's
    ``url`` in tests and demos). ``api_version`` defaults to the SDK's own version.
    """

    def __init__(
        self,
        graph_url: str,
        access_token: str,
        *,
        api_version: str | None = None,
        app_secret: str | None = None,
        app_id: str | None = None,
        timeout: float = 60,
    ) -> None:
        if api_version is not None and not _API_VERSION.match(api_version):
            raise ValueError(f"api_version must look like 'v19.0', got {api_version!r}")
        self._secrets = [s for s in (access_token, app_secret) if s]
        session = FacebookSession(app_id, app_secret, access_token, timeout=timeout)
        # The appsecret_proof is derived from both secrets; it must not leak either.
        proof = getattr(session, "appsecret_proof", None)
        if proof:
            self._secrets.append(proof)
        # An instance attribute shadows the class-level default without affecting other sessions.
        session.GRAPH = graph_url.rstrip("/")
        if urlsplit(session.GRAPH).hostname in _LOOPBACK_HOSTS:
            # Never route local (emulator) traffic through a proxy taken from the environment.
            session.requests.trust_env = False
        # Built directly rather than via FacebookAdsApi.init(): init() would install a process-wide
        # default API and, unless told otherwise, enable the SDK's crash reporter.
        self._api = FacebookAdsApi(session, api_version)

    @property
    def api_version(self) -> str:
        """The Graph API version requests are sent to, e.g. ``v26.0``."""
        return self._api.get_api_version()

    @property
    def calls(self) -> int:
        """How many HTTP calls this client has attempted so far (failed ones included)."""
        return self._api.get_num_requests_attempted()

    def iter_insights(
        self,
        account_id: str,
        since: date,
        until: date,
        *,
        fields: Iterable[str] = INSIGHT_FIELDS,
        limit: int = 500,
    ) -> Iterator[dict]:
        """Yield daily ad-level insight rows for ``since..until`` (inclusive) as plain dicts.

        Values keep Meta's wire types: counts and spend are strings.
        """
        params = {
            "level": "ad",
            # The SDK types time_increment as a string ("1", "monthly", "all_days"); both an int
            # and a str go out as "1" on the wire, the str simply matches the declared type.
            "time_increment": "1",
            "time_range": {"since": since.isoformat(), "until": until.isoformat()},
            "limit": limit,
        }
        account = self._account(account_id)
        yield from self._iterate(lambda: account.get_insights(fields=list(fields), params=params))

    def iter_campaigns(
        self, account_id: str, *, fields: Iterable[str] = CAMPAIGN_FIELDS, limit: int = 200
    ) -> Iterator[dict]:
        """Yield the account's campaigns as plain dicts."""
        account = self._account(account_id)
        yield from self._iterate(
            lambda: account.get_campaigns(fields=list(fields), params={"limit": limit})
        )

    def iter_adsets(
        self, account_id: str, *, fields: Iterable[str] = ADSET_FIELDS, limit: int = 200
    ) -> Iterator[dict]:
        """Yield the account's ad sets as plain dicts."""
        account = self._account(account_id)
        yield from self._iterate(
            lambda: account.get_ad_sets(fields=list(fields), params={"limit": limit})
        )

    def iter_ads(
        self, account_id: str, *, fields: Iterable[str] = AD_FIELDS, limit: int = 200
    ) -> Iterator[dict]:
        """Yield the account's ads as plain dicts."""
        account = self._account(account_id)
        yield from self._iterate(
            lambda: account.get_ads(fields=list(fields), params={"limit": limit})
        )

    # -- internals -------------------------------------------------------------------------------

    def _account(self, account_id: str) -> AdAccount:
        account_id = str(account_id)
        node = account_id if account_id.startswith("act_") else f"act_{account_id}"
        return AdAccount(node, api=self._api)

    def _iterate(self, fetch) -> Iterator[dict]:
        """Run an SDK edge read and page through its cursor, translating SDK errors.

        The first page is fetched by ``fetch()``; later pages are fetched lazily by the cursor as
        iteration proceeds, so both are inside the ``try``.
        """
        try:
            for obj in fetch():
                yield obj.export_all_data()
        except FacebookRequestError as exc:
            raise self._wrap(exc) from None
        except requests.RequestException as exc:
            # requests' messages include the request URL, and with it the access token.
            raise GraphApiError(
                self._redact(f"Graph API request failed: {type(exc).__name__}: {exc}"),
                is_transient=True,
            ) from None

    def _wrap(self, exc: FacebookRequestError) -> GraphApiError:
        # Built from the structured fields only: the SDK's str() includes request params.
        body = exc.body() if isinstance(exc.body(), dict) else {}
        error = body.get("error") or {}
        status = exc.http_status()
        message = exc.api_error_message() or exc.get_message() or "Graph API error"
        code = exc.api_error_code()
        subcode = exc.api_error_subcode()
        detail = f"code={code}" + (f", subcode={subcode}" if subcode is not None else "")
        return GraphApiError(
            self._redact(f"Graph API error (HTTP {status}, {detail}): {message}"),
            code=code,
            subcode=subcode,
            http_status=status,
            is_transient=bool(exc.api_transient_error()),
            error_type=exc.api_error_type(),
            fbtrace_id=error.get("fbtrace_id"),
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, _REDACTED)
        return text
