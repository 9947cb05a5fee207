"""Alert rules for vehicles and patients: pure state machines fed with events and a clock."""

from __future__ import annotations

from processors.rules.alerts import Alert, AlertBook, AlertState, Severity, Sustained, fingerprint

__all__ = ["Alert", "AlertBook", "AlertState", "Severity", "Sustained", "fingerprint"]
