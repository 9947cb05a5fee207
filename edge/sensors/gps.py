"""Serial GPS receiver (NMEA 0183): the I/O shell around ``edge.sensors.nmea``.

Config options (``[[sensors]]`` with ``type = "gps"``): ``port`` (required),
``baudrate`` (9600), ``idle_flush`` (seconds without data after which an open epoch is
reported anyway; 1.5).

Each fix becomes a Reading of kind ``gps`` whose data is ``{"time", "mode", "lat", "lon",
"speed", "track", "alt"}`` (see ``nmea.Fix``; position, speed and track are ``None``
without a fix). The reading's ``ts`` is the fix time, or the arrival time while the
receiver has not sent a date yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge.sensors.base import Reading
from edge.sensors.nmea import Fix, NmeaDecoder
from edge.sensors.options import opt_float, opt_int, opt_str
from edge.sensors.serial_link import SerialLink

__all__ = ["GpsSensor", "make_gps"]


class GpsSensor:
    kind = "gps"

    def __init__(self, name: str, port: str, baudrate: int = 9600, idle_flush: float = 1.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.link = SerialLink(name, port, baudrate)
        self.idle_flush = float(idle_flush)
        self._clock = clock
        self._decoder = NmeaDecoder()
        self._last_data = clock()
        self._fixes = 0

    def open(self) -> None:
        self.link.open()
        self._last_data = self._clock()

    def poll(self) -> list[Reading]:
        data = self.link.read_available()
        now = self._clock()
        if data:
            self._last_data = now
            fixes = self._decoder.feed(data)
        elif now - self._last_data >= self.idle_flush:
            fixes = self._decoder.flush()
        else:
            fixes = []
        self._fixes += len(fixes)
        return [self._reading(f, now) for f in fixes]

    def _reading(self, fix: Fix, now: float) -> Reading:
        return Reading(self.kind, fix.to_json(), fix.ts if fix.ts is not None else int(now * 1000))

    def close(self) -> None:
        self.link.close()

    def stats(self) -> dict[str, int]:
        c = self._decoder.counters
        return {"fixes": self._fixes, "sentences": c["sentences"],
                "bad_sentences": c["bad_checksum"] + c["malformed"] + c["noise"],
                **{k: v for k, v in c.items() if k != "sentences"}}


def make_gps(name: str, options: dict[str, Any]) -> GpsSensor:
    return GpsSensor(name, opt_str(options, "port"), opt_int(options, "baudrate", 9600, lo=50),
                     opt_float(options, "idle_flush", 1.5, positive=True))
