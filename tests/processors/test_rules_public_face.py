"""The rules' public face is pinned: other parts import only these names."""

from __future__ import annotations

import processors.rules as rules


def test_rules_exports() -> None:
    assert sorted(rules.__all__) == sorted([
        "DEFAULT_THRESHOLDS", "Alert", "AlertBook", "AlertState", "Circle", "PatientMonitor",
        "PatientRules", "Polygon", "Severity", "Sustained", "Threshold", "TrackSummary",
        "VehicleMonitor", "VehicleRules", "Zone", "fingerprint", "haversine_m", "summarize_track"])
    assert all(hasattr(rules, name) for name in rules.__all__)
