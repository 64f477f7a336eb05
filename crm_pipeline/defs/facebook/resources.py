"""The Graph API resource: a facebook-business SDK client for the configured server.

The bundled emulator is used only when asked for (`FB_GRAPH_URL=emulator`, or a server URL
given in code by the tests), and only as a separate process over HTTP; without it, a run with
no `FB_ACCESS_TOKEN` fails at once naming the missing variables, and Meta is never contacted by
accident. The token is read from the environment at run time and never becomes Dagster config,
so it cannot show up in the UI, run config or metadata.
"""

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import dagster as dg

from crm_pipeline.config import ConfigError, load_settings, parse_account_ids, parse_page_ids
from crm_pipeline.facebook.async_reports import AsyncInsightsRun
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.page_tokens import PageClients
from crm_pipeline.local_emulator import emulator_for

# Sent when no token is configured: only to the emulator or a server given in code.
PLACEHOLDER_TOKEN = "crm-pipeline-no-token"


@dataclass
class GraphSession:
    """A client plus the accounts and pages to sync and a printable server name."""

    client: GraphClient
    account_ids: tuple[str, ...]
    server: str
    emulated: bool
    # The pages whose lead forms and conversations are synced (`FB_PAGE_ID` + `FB_PAGE_IDS`).
    page_ids: tuple[str, ...] = ()
    opened_at: float = field(default_factory=time.perf_counter)
    pages: PageClients = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pages = PageClients(self.client)

    @property
    def page_id(self) -> str | None:
        """The first configured page, if any."""
        return self.page_ids[0] if self.page_ids else None

    def page_client(self, page_id: str) -> GraphClient:
        """The client that reads `page_id` with its Page access token (asked once a session)."""
        return self.pages.client_for(page_id)


class GraphApiResource(dg.ConfigurableResource):
    """Meta Graph API access. Unset fields fall back to the `FB_*` environment variables."""

    graph_url: str | None = None
    api_version: str | None = None
    ad_account_ids: str | None = None  # comma-separated act_<digits>
    # Pages: both given means the union, as with FB_PAGE_ID and FB_PAGE_IDS.
    page_id: str | None = None
    page_ids: str | None = None  # comma-separated numeric ids
    page_size: int = 500
    # "sync": paged GETs; "async": report runs (Meta's advice for large accounts).
    insights_mode: str = load_settings().graph.insights_mode
    # The most days one /insights query (or report run) asks for. A run over a longer range
    # (a backfill) makes one query per this many days: every row of a query is held in memory
    # until it is split into per-day files, so this bounds memory for large accounts.
    insights_days_per_query: int = 31

    def fetch_insights(
        self,
        client: GraphClient,
        account_id: str,
        since: dt.date,
        until: dt.date | None = None,
    ):
        """Ad-level daily insights of `since..until` (one day when `until` is omitted), by
        paged GETs or an async report run: one query for the whole range."""
        until = since if until is None else until
        if self.insights_mode == "async":
            return AsyncInsightsRun(client, account_id, since, until, limit=self.page_size)
        if self.insights_mode != "sync":
            raise ConfigError(
                f"insights_mode must be 'sync' or 'async', not {self.insights_mode!r}"
            )
        return client.iter_insights(account_id, since, until, limit=self.page_size)

    @contextmanager
    def session(self) -> Iterator[GraphSession]:
        """Open a client for the configured Graph API server.

        The bundled emulator only when asked for: `FB_GRAPH_URL=emulator` (the one at
        `CRM_EMULATOR_URL`, else a private emulator process for this session), or a
        `graph_url` given to this resource in code (tests). Otherwise Meta's credentials are
        required, and their absence stops the run here, before it writes anything.
        """
        settings = load_settings()
        settings.require_production_ready("a Graph API run")
        accounts = parse_account_ids(self.ad_account_ids) or settings.ad_account_ids
        pages = parse_page_ids(",".join(p for p in (self.page_id, self.page_ids) if p))
        pages = pages or settings.all_page_ids
        with ExitStack() as stack:
            emulated = not self.graph_url and settings.uses_emulator
            if self.graph_url:
                url = self.graph_url
            elif emulated:
                # A separate process, asked over HTTP for what it serves (local_emulator).
                emulator = stack.enter_context(emulator_for(settings))
                url = emulator.url
                accounts = accounts or emulator.ad_account_ids
                pages = pages or ((emulator.page_id,) if emulator.page_id else ())
            else:
                settings.require_graph_credentials()
                url = settings.effective_graph_url
            if not accounts:
                raise ConfigError(
                    "FB_AD_ACCOUNT_IDS is empty: set the ad accounts to sync (act_<digits>, "
                    "comma-separated)"
                )
            token = settings.access_token.reveal() if settings.access_token else PLACEHOLDER_TOKEN
            client = GraphClient(
                url,
                token,
                api_version=self.api_version or settings.api_version,
                app_secret=settings.app_secret.reveal() if settings.app_secret else None,
                app_id=settings.app_id,
                governor_settings=settings.graph.governor_settings(),
            )
            parts = urlsplit(url)
            yield GraphSession(
                client=client,
                account_ids=accounts,
                server=f"{parts.scheme}://{parts.netloc}",
                emulated=emulated,
                page_ids=pages,
            )
