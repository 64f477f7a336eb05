"""A thin Graph API client on top of the official facebook-business SDK.

Each :class:`GraphClient` owns its own SDK session and ``FacebookAdsApi`` instance: nothing is
installed as the SDK's global default and the SDK's crash reporter is never enabled, so several
clients (for example one against Meta and one against the local emulator) can coexist safely.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

import requests
from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError

from crm_pipeline.facebook import sdk_call
from crm_pipeline.facebook.api_notices import ApiNotices
from crm_pipeline.facebook.error_messages import explain
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.fields import (
    AD_ACCOUNT_FIELDS,
    INSIGHT_FIELDS,
    INSIGHT_LEVEL,
    OBJECT_FIELDS,
    insight_params,
)
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_registry import GovernorRegistry, GovernorRouter
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.ids import API_VERSION, account_node, sdk_api_version

__all__ = ["GovernedAdsApi", "GraphClient"]

T = TypeVar("T")

# kind -> the SDK AdAccount edge method that lists it
_OBJECT_EDGES = frozenset({"campaigns", "adsets", "ads"})  # Graph edges of an ad account
# kind -> the SDK node class of one such object
_OBJECT_NODES = {"campaigns": Campaign, "adsets": AdSet, "ads": Ad}
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_REDACTED = "[REDACTED]"


class GovernedAdsApi(FacebookAdsApi):
    """A ``FacebookAdsApi`` whose every HTTP request goes through a rate-limit governor.

    ``call`` is the single funnel of the SDK: node reads, edge cursors (including
    ``Cursor.load_next_page``), report-run creation and polls, batches. ``route(path)`` picks the
    governor (and the stats ledger) of each request. ``attempts`` counts HTTP requests actually
    sent, retries included. ``notices`` receives the version and deprecation warnings in the
    headers of every response, successes and errors alike.
    """

    def __init__(self, session, api_version, route, notices: ApiNotices | None = None) -> None:
        super().__init__(session, api_version)
        self._route = route
        self._notices = notices if notices is not None else ApiNotices()
        self._attempts = 0
        self._attempts_lock = threading.Lock()

    @property
    def attempts(self) -> int:
        """HTTP requests sent so far, retries included (thread-safe, unlike the SDK's count)."""
        with self._attempts_lock:
            return self._attempts

    def call(
        self,
        method,
        path,
        params=None,
        headers=None,
        files=None,
        url_override=None,
        api_version=None,
    ):
        """The SDK's request, sent (and re-sent) by the governor that ``path`` routes to."""
        governor, ledger = self._route(path)
        # The same dict the caller (e.g. an SDK Cursor) holds: a reduced `limit` sticks to it.
        params = params if params is not None else {}

        def send():
            with self._attempts_lock:
                self._attempts += 1
            try:
                # The SDK's call, its answer's JSON parsed once (`sdk_call`).
                response = sdk_call.send(
                    self, method, path, params, headers, files, url_override, api_version
                )
            except FacebookRequestError as exc:
                # An expired version's 400 may carry the warning too: read errors' headers.
                self._notices.observe(exc.http_headers())
                raise
            self._notices.observe(response.headers())
            return response

        return governor.call(send, params=params, ledger=ledger)


class GraphClient:
    """Read ad-account data through the facebook-business SDK, under a rate-limit governor.

    ``graph_url`` replaces the SDK's ``https://graph.facebook.com`` (point it at the emulator's
    ``url`` in tests and demos). ``api_version`` defaults to the SDK's own version.

    ``governor`` decides how calls are paced and retried:

    - None (the default): each call goes to the process-wide governor of the ad account it is
      billed to (:func:`~crm_pipeline.facebook.governor_registry.governor_for`), so every client
      calling an account shares its usage and throttle state; the wait budget and
      :attr:`governor`'s ``stats`` are this client's own;
    - a :class:`GovernorRegistry`: the same, with that registry's governors (tests);
    - a :class:`GovernorRouter`: that router, shared with the client that owns it (its stats
      and wait budget too), as :meth:`with_token` does;
    - a :class:`RateLimitGovernor`: every call of this client goes through that one governor.

    ``governor_settings`` (default: :class:`GovernorSettings`' defaults) apply to the shared
    governors; the product passes those of ``CRM_GRAPH_*`` (``GraphSettings.governor_settings``).
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
        governor: RateLimitGovernor | GovernorRegistry | GovernorRouter | None = None,
        governor_settings: GovernorSettings | None = None,
        notices: ApiNotices | None = None,
    ) -> None:
        if api_version is not None and not API_VERSION.match(api_version):
            raise ValueError(f"api_version must look like 'v19.0', got {api_version!r}")
        self._secrets = [s for s in (access_token, app_secret) if s]
        self._token_clients: list[GraphClient] = []  # made by with_token (Page tokens)
        # Unset means the SDK's own: the newest version the installed facebook-business speaks.
        self._api_version = api_version or sdk_api_version()
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
        # Accounts are read from several threads at once: keep a connection for every request
        # the governors let be in flight (requests' default pool keeps 10 and drops the rest).
        in_flight = (governor_settings or GovernorSettings()).max_calls_in_flight
        pool = requests.adapters.HTTPAdapter(pool_maxsize=max(10, in_flight))
        session.requests.mount("https://", pool)
        session.requests.mount("http://", pool)

        if isinstance(governor, RateLimitGovernor):
            self._governor: RateLimitGovernor | GovernorRouter = governor
            route = lambda path: (governor, None)  # noqa: E731 - one governor for every call
        else:
            router = (
                governor
                if isinstance(governor, GovernorRouter)
                else GovernorRouter(governor, governor_settings)
            )
            self._governor = router
            route = router.route
        # Meta's version and deprecation warnings, redacted like errors before anyone reads them;
        # `notices` shares another client's (a Page-token client reports into its parent's).
        self._notices = notices if notices is not None else ApiNotices(self._redact)
        # Built directly rather than via FacebookAdsApi.init(): init() would install a process-wide
        # default API and, unless told otherwise, enable the SDK's crash reporter.
        self._api = GovernedAdsApi(session, self._api_version, route, self._notices)

    @property
    def api(self) -> FacebookAdsApi:
        """The governed SDK API object, for SDK node/edge objects (``Page(id, api=...)``)."""
        return self._api

    @property
    def governor(self) -> RateLimitGovernor | GovernorRouter:
        """The governor (or, by default, the router to the per-account governors) in use.

        Its ``stats`` (:class:`~crm_pipeline.facebook.governor_stats.GovernorStats`) count
        calls, retries, throttle waits, waited seconds, page-size reductions and the highest
        usage.
        """
        return self._governor

    @property
    def api_version(self) -> str:
        """The Graph API version of every call: ``FB_API_VERSION``, else the SDK's own."""
        return self._api_version

    @property
    def notices(self) -> ApiNotices:
        """Meta's version and deprecation warnings seen so far (distinct, bounded, redacted)."""
        return self._notices

    @property
    def calls(self) -> int:
        """How many HTTP calls this client, and the clients made by :meth:`with_token`, have
        made so far (retried and failed ones included)."""
        return self._api.attempts + sum(other.calls for other in self._token_clients)

    def with_token(self, access_token: str) -> GraphClient:
        """A client for the same server, app and governors that sends ``access_token`` (a Page
        access token) instead of ours.

        Its calls are paced and counted with ours (same governor router: same usage state,
        stats and wait budget); both clients redact both tokens from their errors.
        """
        session = self._api._session
        other = GraphClient(
            session.GRAPH,
            access_token,
            api_version=self._api._api_version,
            app_secret=session.app_secret,
            app_id=session.app_id,
            timeout=session.timeout,
            governor=self._governor,
            notices=self._notices,
        )
        other._secrets.extend(s for s in self._secrets if s not in other._secrets)
        self._secrets.extend(s for s in other._secrets if s not in self._secrets)
        self._token_clients.append(other)
        return other

    def iter_insights(
        self,
        account_id: str,
        since: date,
        until: date,
        *,
        fields: Iterable[str] = INSIGHT_FIELDS,
        limit: int = 500,
        level: str = INSIGHT_LEVEL,
    ) -> Iterator[dict]:
        """Yield daily insight rows for ``since..until`` (inclusive) as plain dicts.

        ``level`` is ``ad`` (one row per ad and day) or ``account`` (Meta's totals of the
        account and day; pass ``ACCOUNT_INSIGHT_FIELDS``). Values keep Meta's wire types:
        counts and spend are strings. For large ranges see
        :class:`~crm_pipeline.facebook.async_reports.AsyncInsightsRun`.
        """
        params = insight_params(since, until, limit=limit, level=level)
        yield from self.iter_edge_rows(account_node(account_id), "insights", fields, params)

    def read_ad_account(
        self, account_id: str, *, fields: Iterable[str] = AD_ACCOUNT_FIELDS
    ) -> dict:
        """The ad account node itself (``GET act_<id>?fields=...``) as a plain dict."""
        account = self.account(account_id)
        self.request(lambda: account.api_get(fields=list(fields)))
        return account.export_all_data()

    def iter_objects(
        self,
        kind: str,
        account_id: str,
        *,
        fields: Iterable[str] | None = None,
        limit: int = 200,
        params: dict[str, Any] | None = None,
    ) -> Iterator[dict]:
        """Yield an account's campaigns, adsets or ads (`kind`) as plain dicts.

        `params` adds edge parameters, e.g. `filtering` on `updated_time` for incremental reads.
        Read as plain JSON pages (:meth:`iter_edge_rows`): an agency's ads are tens of
        thousands of rows, and an SDK object per row cost more than the reads themselves.
        """
        if kind not in _OBJECT_EDGES:
            raise ValueError(f"unknown object kind {kind!r}: one of {sorted(_OBJECT_EDGES)}")
        query = {"limit": limit, **(params or {})}
        fields = list(fields or OBJECT_FIELDS[kind])
        yield from self.iter_edge_rows(account_node(account_id), kind, fields, query)

    def read_object(
        self, kind: str, object_id: str, account_id: str, *, fields: Iterable[str] | None = None
    ) -> dict:
        """One campaign, ad set or ad (`kind`) alone (``GET /<id>?fields=...``) as a plain dict,
        billed to its ad account's governor."""
        node = _OBJECT_NODES[kind](object_id, api=self._api)
        self.bind_node(object_id, account_id)
        self.request(lambda: node.api_get(fields=list(fields or OBJECT_FIELDS[kind])))
        return node.export_all_data()

    def iter_campaigns(self, account_id: str, **kwargs: Any) -> Iterator[dict]:
        """Yield the account's campaigns as plain dicts."""
        return self.iter_objects("campaigns", account_id, **kwargs)

    def iter_adsets(self, account_id: str, **kwargs: Any) -> Iterator[dict]:
        """Yield the account's ad sets as plain dicts."""
        return self.iter_objects("adsets", account_id, **kwargs)

    def iter_ads(self, account_id: str, **kwargs: Any) -> Iterator[dict]:
        """Yield the account's ads as plain dicts."""
        return self.iter_objects("ads", account_id, **kwargs)

    # -- building blocks for other readers (streams, async report runs) --------------------------

    def account(self, account_id: str) -> AdAccount:
        """The SDK ``AdAccount`` (``act_<digits>``; bare digits accepted) bound to this client."""
        return AdAccount(account_node(account_id), api=self._api)

    def iterate(self, fetch: Callable[[], Iterable[Any]]) -> Iterator[dict]:
        """Run an SDK edge read and page through its cursor, translating SDK errors.

        The first page is fetched by ``fetch()``; later pages are fetched lazily by the cursor as
        iteration proceeds, so both are inside the error translation.
        """
        with self.translate_errors():
            for obj in fetch():
                yield obj.export_all_data()

    def iter_edge_rows(
        self, node: str, edge: str, fields: Iterable[str], params: dict[str, Any]
    ) -> Iterator[dict]:
        """Page through ``node/edge`` yielding each row of Meta's JSON as it came.

        For the big edges (insights: hundreds of thousands of rows a day for an agency). The
        SDK's cursor builds an object per row and exports it back to a dict, a third of the
        client's time on a 15,000-row range; here each page is one governed ``call`` (pacing,
        retries, page-size shrinking and notices as for every request) and its ``data`` is
        yielded as is. Paging follows Meta's ``after`` cursor, as the SDK's cursor does.
        """
        # One dict for the whole read: a `limit` the governor shrinks sticks to later pages.
        query: dict[str, Any] = {**params, "fields": ",".join(fields)}
        with self.translate_errors():
            while True:
                body = _json_body(self._api.call("GET", (node, edge), params=query))
                yield from body.get("data") or []
                paging = body.get("paging") or {}
                after = (paging.get("cursors") or {}).get("after")
                if not paging.get("next") or not after:
                    return
                query["after"] = after

    def request(self, fn: Callable[[], T]) -> T:
        """Run one SDK call (e.g. a node read), translating its errors like :meth:`iterate`."""
        with self.translate_errors():
            return fn()

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn SDK and requests errors into redacted :class:`GraphApiError`s."""
        try:
            yield
        except FacebookRequestError as exc:
            raise self._wrap(exc) from None
        except requests.RequestException as exc:
            # requests' messages include the request URL, and with it the access token.
            retries = getattr(exc, "governor_retries", None)
            after = f" (gave up after {retries} retries)" if retries else ""
            raise GraphApiError(
                self._redact(f"Graph API request failed: {type(exc).__name__}: {exc}{after}"),
                is_transient=True,
            ) from None

    def bind_node(self, node_id: str, account_id: str) -> None:
        """Bill later calls on ``node_id`` (a report run) to ``account_id``'s governor."""
        if isinstance(self._governor, GovernorRouter):
            self._governor.bind(node_id, account_id)

    # -- internals -------------------------------------------------------------------------------

    def _wrap(self, exc: FacebookRequestError) -> GraphApiError:
        # Built from the structured fields only: the SDK's str() includes request params.
        body = exc.body() if isinstance(exc.body(), dict) else {}
        error = body.get("error") or {}
        status = exc.http_status()
        message = exc.api_error_message() or exc.get_message() or "Graph API error"
        code = exc.api_error_code()
        subcode = exc.api_error_subcode()
        detail = f"HTTP {status}, code={code}" + (
            f", subcode={subcode}" if subcode is not None else ""
        )
        # A bad token or permission, an expired or unknown version, a refused field: named with
        # the fix, and never retryable (settled), whatever else the error body says.
        explained = explain(code, message, detail, self.api_version)
        text = explained.text
        retries = getattr(exc, "governor_retries", None)
        if retries:
            text += f" (gave up after {retries} retries)"
        return GraphApiError(
            self._redact(text),
            code=code,
            subcode=subcode,
            http_status=status,
            is_transient=not explained.settled and bool(exc.api_transient_error()),
            error_type=exc.api_error_type(),
            fbtrace_id=error.get("fbtrace_id"),
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                text = text.replace(form, _REDACTED)
        return text


def _json_body(response: Any) -> dict:
    """A response's JSON body: parsed once, by `sdk_call.ParsedResponse` (orjson)."""
    parsed = response.json()
    if not isinstance(parsed, dict):
        raise requests.exceptions.InvalidJSONError(
            "the Graph API answered with something other than a JSON object"
        )
    return parsed
