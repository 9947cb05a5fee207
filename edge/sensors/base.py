"""The one interface every sensor driver implements.

A driver owns its I/O (a serial port, GPIO pins) and turns what it reads into
``Reading``s. The agent polls each sensor from one thread; ``poll`` must not block for
long (read what is available, with a short timeout), and returns every reading produced
since the previous poll, oldest first. Reporting policy (period, deadband, heartbeat)
is the agent's business, not the driver's: a driver reports what it sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Reading", "Sensor", "SensorError"]


class SensorError(Exception):
    """A sensor that cannot be opened or read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Reading:
    kind: str  # the event kind: gps, vitals, obd, gpio, adc, button, ...
    data: dict[str, Any]  # JSON-serialisable
    ts: int  # ms since the epoch, UTC: when the sensor measured it


class Sensor(Protocol):
    name: str  # unique within a device, from its config (e.g. "gps", "door")

    def open(self) -> None: ...

    def poll(self) -> list[Reading]: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters worth reporting (e.g. {"bad_sentences": 3})."""
        ...
