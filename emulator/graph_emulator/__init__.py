"""A local HTTP server that speaks the Graph API wire format, fed by seeded fake data."""

from graph_emulator.data import EmulatorData
from graph_emulator.faults import Fault, FaultPlan
from graph_emulator.page_tokens import page_token
from graph_emulator.server import GraphEmulator, RecordedRequest
from graph_emulator.versions import VersionTable

__all__ = [
    "EmulatorData",
    "Fault",
    "FaultPlan",
    "GraphEmulator",
    "RecordedRequest",
    "VersionTable",
    "page_token",
]
