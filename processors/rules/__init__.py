"""Alert rules for vehicles and patients: pure state machines fed with events and a clock."""

from __future__ import annotations

from processors.rules.alerts import Alert, AlertBook, AlertState, Severity, Sustained, fingerprint
from processors.rules.patient import DEFAULT_THRESHOLDS, PatientMonitor, PatientRules, Threshold
from processors.rules.vehicle import (
    Circle,
    Polygon,
    TrackSummary,
    VehicleMonitor,
    VehicleRules,
    Zone,
    haversine_m,
    summarize_track,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Alert",
    "AlertBook",
    "AlertState",
    "Circle",
    "PatientMonitor",
    "PatientRules",
    "Polygon",
    "Severity",
    "Sustained",
    "Threshold",
    "TrackSummary",
    "VehicleMonitor",
    "VehicleRules",
    "Zone",
    "fingerprint",
    "haversine_m",
    "summarize_track",
]
