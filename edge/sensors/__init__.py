"""Sensor drivers: each a pure parser plus a thin I/O shell, behind one interface."""

from __future__ import annotations

from edge.sensors.base import Reading, Sensor, SensorError

__all__ = ["Reading", "Sensor", "SensorError"]
