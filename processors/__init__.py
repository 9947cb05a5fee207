"""Vigil's stream processors: event-time windows and the vehicle and patient rules.

Pure cores so far: the window engine (``processors.windows``), the NEWS2 scorer and the
rule state machines (``processors.rules``). The consumer-group shell that feeds them from
the ``telemetry`` topic and writes ``alerts`` and ``device-state`` comes next.

``processors.news2(...)`` is the NEWS2 scorer itself (the function; its module stays
importable as ``from processors.news2 import News2``).
"""

from __future__ import annotations

from processors.news2 import News2, News2Error, news2
from processors.rules import Alert, AlertBook, AlertState, PatientMonitor, Severity, VehicleMonitor
from processors.windows import (
    Emit,
    Hopping,
    Query,
    Session,
    Tumbling,
    WindowEngine,
    WindowResult,
    sliding,
)

__all__ = [
    "Alert",
    "AlertBook",
    "AlertState",
    "Emit",
    "Hopping",
    "News2",
    "News2Error",
    "PatientMonitor",
    "Query",
    "Session",
    "Severity",
    "Tumbling",
    "VehicleMonitor",
    "WindowEngine",
    "WindowResult",
    "news2",
    "sliding",
]
