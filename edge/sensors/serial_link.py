"""The thin I/O shell the serial drivers share: a pyserial port read without blocking.

``port`` is anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB0``, ``/dev/serial0``,
a pseudo-terminal such as ``/dev/pts/7`` (what the simulators and tests use), or a URL
like ``socket://host:port`` or ``loop://``.
"""

from __future__ import annotations

import logging
from typing import Any

import serial

from edge.sensors.base import SensorError

__all__ = ["SerialLink"]

log = logging.getLogger("vigil.edge")


class SerialLink:
    def __init__(self, sensor: str, port: str, baudrate: int = 9600) -> None:
        if not port:
            raise ValueError("port: a serial port is required (e.g. /dev/ttyUSB0)")
        self.sensor = sensor
        self.port = port
        self.baudrate = int(baudrate)
        self._serial: Any = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is not None:
            return
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0,
                                                 write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SensorError(f"{self.sensor}: cannot open {self.port}: {exc}") from exc
        log.info("%s: opened %s at %d baud", self.sensor, self.port, self.baudrate)

    def read_available(self, limit: int = 65536) -> bytes:
        """Whatever the port holds right now (b"" when nothing), never blocking."""
        if self._serial is None:
            raise SensorError(f"{self.sensor}: {self.port} is not open")
        try:
            return bytes(self._serial.read(limit))
        except (serial.SerialException, OSError) as exc:
            raise SensorError(f"{self.sensor}: reading {self.port} failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise SensorError(f"{self.sensor}: {self.port} is not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise SensorError(f"{self.sensor}: writing {self.port} failed: {exc}") from exc

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None
