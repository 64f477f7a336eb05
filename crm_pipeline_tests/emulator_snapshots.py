"""Whole-data snapshots of a Graph API emulator's Page: what a complete sync must end up with.

Test helpers only: they read :class:`graph_emulator.EmulatorData` through its public accessors.
"""

from __future__ import annotations

from graph_emulator import EmulatorData


def all_leads(data: EmulatorData) -> list[dict]:
    """Every lead of every lead form, form by form, newest first within a form."""
    return [lead for form in data.lead_forms() for lead in data.leads(form["id"])]


def conversations_with_messages(data: EmulatorData) -> list[dict]:
    """Every conversation (newest first) as ``{"id", "psid", "updated_time", "messages"}``, with
    its full message list, newest first."""
    return [
        {
            "id": conversation["id"],
            "psid": conversation["participants"]["data"][0]["id"],
            "updated_time": conversation["updated_time"],
            "messages": data.messages(conversation["id"]),
        }
        for conversation in data.conversations()
    ]
