"""The SDK's request with its answer parsed once: the same rows and errors as the SDK's own
`call`, without a second parse of every page."""

from __future__ import annotations

import json
from datetime import date

import pytest
from facebook_business import api as sdk_api

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.sdk_call import ParsedResponse


@pytest.fixture
def client(emulator, token, app_secret) -> GraphClient:
    return GraphClient(emulator.url, token, app_secret=app_secret, app_id="123", timeout=10)


def test_an_insights_page_is_parsed_once(client, emulator, monkeypatch):
    parses = []
    real = json.loads

    def counting(text, *args, **kwargs):
        parses.append(len(text))
        return real(text, *args, **kwargs)

    # The SDK's call and our reader both parse with json.loads: count every parse of a page.
    monkeypatch.setattr(sdk_api.json, "loads", counting)
    emulator.reset_requests()
    rows = list(client.iter_insights("act_1001", date(2026, 2, 2), date(2026, 2, 3), limit=5))
    pages = sum(1 for r in emulator.requests if r.path.endswith("/insights"))
    assert len(rows) > 5 and pages >= 2
    # Bodies of rows (the usage headers are small JSON too): one parse per page, not two.
    assert len([n for n in parses if n >= 400]) == pages


def test_answers_and_errors_are_the_sdks(client):
    answer = client.api.call("GET", ("act_1001",), params={"fields": "name"})
    assert isinstance(answer, ParsedResponse) and answer.json()["id"] == "act_1001"
    assert answer.json() is answer.json()  # parsed once, kept
    with pytest.raises(GraphApiError) as caught:
        client.request(lambda: client.api.call("GET", ("act_999",), params={"fields": "name"}))
    assert caught.value.code == 100


def test_a_body_that_is_not_json_is_kept_as_text_like_the_sdk():
    answer = ParsedResponse(body="Service Unavailable", http_status=503, headers={})
    assert answer.json() == "Service Unavailable" and answer.is_failure()
    big = ParsedResponse(body='{"id": 123456789012345678901234567890}', http_status=200)
    assert big.json() == {"id": 123456789012345678901234567890}  # exact past 64 bits
