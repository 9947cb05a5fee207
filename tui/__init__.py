"""Vigil's terminal dashboard (Textual), a client of the gateway's HTTP API only.

Run it with ``vigil dash --api http://127.0.0.1:8000 --token T`` (or ``$VIGIL_TOKEN``).
"""

from __future__ import annotations

from tui.app import VigilDash
from tui.client import ApiClient, ApiError, Unreachable
from tui.clock import Clock, ManualClock, SystemClock
from tui.model import DashboardState

__all__ = ["ApiClient", "ApiError", "Clock", "DashboardState", "ManualClock", "SystemClock",
           "Unreachable", "VigilDash"]
