"""Which page a webhook entry belongs to: FB_PAGE_ID, and PSIDs that are only unique per page."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import text

from crm_pipeline.api.app import create_app
from crm_pipeline_tests.api.conftest import LiveApi, api_settings, run_live
from crm_pipeline_tests.api.webhook_helpers import (
    OTHER_PAGE,
    PAGE,
    counts,
    delivery,
    inbox,
    lead_entry,
    message_entry,
    post,
    rejected_key,
)


@pytest.fixture
def page_api(clean_db, database_url, dirs):
    """The API with FB_PAGE_ID set: entries of other pages are rejected."""
    base = api_settings(dirs["cache"])
    if dataclasses.is_dataclass(base):
        settings = dataclasses.replace(base, page_id=PAGE)
    else:  # a pydantic-settings model
        settings = base.model_copy(update={"page_id": PAGE})
    app = create_app(settings, database_url=database_url, cache_dir=dirs["cache"])
    live = run_live(app)
    url = next(live)
    yield LiveApi(url, app, dirs["cache"])
    next(live, None)


def test_unknown_page_is_rejected_when_a_page_is_configured(page_api, clean_db):
    ours = lead_entry("9990001", page=PAGE)
    theirs = lead_entry("9990002", page=OTHER_PAGE)
    response = post(page_api, delivery(ours, theirs))
    assert response.status_code == 200
    assert response.json() == counts(stored=1, rejected=1)
    rows = inbox(clean_db)
    assert [(r.event_key, r.status) for r in rows] == [
        ("9990001", "pending"),
        (rejected_key(theirs), "rejected"),
    ]
    assert rows[1].error == "entry.id: not a page this receiver serves (FB_PAGE_ID, FB_PAGE_IDS)"


@pytest.fixture
def pages_api(clean_db, database_url, dirs):
    """The API with FB_PAGE_ID and FB_PAGE_IDS set: entries of either are ours."""
    settings = api_settings(dirs["cache"]).model_copy(
        update={"page_id": PAGE, "page_ids": (OTHER_PAGE,)}
    )
    app = create_app(settings, database_url=database_url, cache_dir=dirs["cache"])
    live = run_live(app)
    url = next(live)
    yield LiveApi(url, app, dirs["cache"])
    next(live, None)


def test_entries_of_every_configured_page_are_accepted(pages_api, clean_db):
    third = lead_entry("9990003", page="4001")
    response = post(
        pages_api,
        delivery(lead_entry("9990001", page=PAGE), lead_entry("9990002", OTHER_PAGE), third),
    )
    assert response.json() == counts(stored=2, rejected=1)
    rows = inbox(clean_db)
    assert [(r.event_key, r.status) for r in rows] == [
        ("9990001", "pending"),
        ("9990002", "pending"),
        (rejected_key(third), "rejected"),
    ]


def test_any_page_is_accepted_when_none_is_configured(api, clean_db):
    assert api.app.state.settings.page_id is None
    response = post(api, delivery(lead_entry("1", page=PAGE), lead_entry("2", OTHER_PAGE)))
    assert response.json() == counts(stored=2)


def test_psids_link_per_page_only(api, clean_db):
    # The same PSID number on another page is another person, in another conversation.
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO conversations (id, page_id, psid) VALUES"
                " ('t_other', :other, '7001'), ('wh_2001_7003', :other, '7003')"
            ),
            {"other": OTHER_PAGE},
        )
    echo = message_entry(psid="7001", mid="m_echo", text_="We open at 9")
    echo["messaging"][0].update(sender={"id": PAGE}, recipient={"id": "7001"})
    echo["messaging"][0]["message"]["is_echo"] = True
    clash = message_entry(psid="7003", mid="m_clash", text_="Hi")
    response = post(api, delivery(message_entry(psid="7001"), echo, clash))
    assert response.status_code == 200
    assert response.json() == counts(stored=2, rejected=1)
    with clean_db.connect() as conn:
        conversations = conn.execute(
            text("SELECT id, page_id, psid FROM conversations ORDER BY id")
        ).all()
        messages = conn.execute(
            text("SELECT id, conversation_id, from_id FROM messages ORDER BY id")
        ).all()
    assert conversations == [
        ("t_other", OTHER_PAGE, "7001"),
        ("wh_2001_7001", PAGE, "7001"),
        ("wh_2001_7003", OTHER_PAGE, "7003"),
    ]
    assert messages == [
        ("m_abc", "wh_2001_7001", "7001"),
        ("m_echo", "wh_2001_7001", PAGE),
    ]
    rows = inbox(clean_db)
    assert [(r.event_key, r.status) for r in rows] == [
        ("m_abc", "processed"),
        ("m_echo", "processed"),
        (rejected_key(clash), "rejected"),
    ]
    rejected = rows[-1]
    assert rejected.error == (
        "entry.messaging: the conversation id is taken by another page or person"
    )
