"""Page access tokens: asked once per page through the governed client, never shown.

The real SDK over HTTP against the emulator, which serves conversations only to a Page token.
"""

from __future__ import annotations

import pytest
from graph_emulator import EmulatorData, GraphEmulator
from graph_emulator.page_tokens import page_token

from crm_pipeline.facebook import streams
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.governor_registry import GovernorRegistry
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.page_tokens import PAGE_PERMISSIONS, PageClients, PageTokenError

PAGE = "2001"
FAST = GovernorSettings(base_backoff_seconds=0.001, max_retries=1)


def _token_requests(server: GraphEmulator) -> int:
    return sum(r.params.get("fields") == "access_token" for r in server.requests)


def test_the_user_token_is_refused_on_conversations(emulator, token):
    client = GraphClient(emulator.url, token, timeout=10)
    with pytest.raises(GraphApiError) as info:
        streams.read_conversations(client, PAGE, None)
    assert info.value.code == 210


def test_the_page_client_reads_conversations_and_shares_the_governors(emulator, token):
    registry = GovernorRegistry()
    client = GraphClient(emulator.url, token, timeout=10, governor=registry)
    pages = PageClients(client)
    page_client = pages.client_for(PAGE)
    assert pages.client_for(PAGE) is page_client  # asked once
    batch = streams.read_conversations(page_client, PAGE, None)
    assert batch.conversations and batch.messages
    assert _token_requests(emulator) == 1
    # Billed to the same router: its calls and stats are the session's.
    assert page_client.governor is client.governor
    assert client.calls == len(emulator.requests)
    assert client.governor.stats.calls == len(emulator.requests)


def test_the_page_token_is_redacted_from_errors_of_both_clients(token):
    data = EmulatorData(seed=7)
    secret = page_token(token, data.page_id)
    server = GraphEmulator(data, expected_token=token).start()
    try:
        client = GraphClient(server.url, token, timeout=5, governor=GovernorRegistry())
        client.governor.settings = FAST
        page_client = PageClients(client).client_for(PAGE)
    finally:
        server.stop()
    # The server is gone: requests' error names the URL, with the token in its query string.
    for reader in (page_client, client):
        with pytest.raises(GraphApiError) as info:
            streams.read_conversations(reader, PAGE, None)
        assert info.value.is_transient
        assert secret not in str(info.value) and token not in str(info.value)
        assert "[REDACTED]" in str(info.value)


def test_a_page_the_token_cannot_act_as_is_named_with_the_permissions(emulator, token):
    client = GraphClient(emulator.url, token, timeout=10)
    with pytest.raises(PageTokenError) as info:
        PageClients(client).client_for("9999")
    message = str(info.value)
    assert message.startswith("No Page access token for Page 9999")
    assert all(permission in message for permission in PAGE_PERMISSIONS)
    assert not info.value.retryable and token not in message


def test_an_invalid_user_token_still_fails_as_an_invalid_token(emulator):
    client = GraphClient(emulator.url, "EAAnot-the-right-token", timeout=10)
    with pytest.raises(GraphApiError) as info:
        PageClients(client).client_for(PAGE)
    assert info.value.code == 190 and not isinstance(info.value, PageTokenError)
    assert "FB_ACCESS_TOKEN" in str(info.value)
