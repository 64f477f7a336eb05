"""A local HTTP server that speaks the Graph API wire format, fed by seeded fake data."""

from crm_pipeline.facebook.emulator.data import EmulatorData
from crm_pipeline.facebook.emulator.faults import Fault, FaultPlan
from crm_pipeline.facebook.emulator.server import GraphEmulator, RecordedRequest

__all__ = ["EmulatorData", "Fault", "FaultPlan", "GraphEmulator", "RecordedRequest"]
