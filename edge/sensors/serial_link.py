"""The thin I/O shell the serial drivers share: a pyserial port read without blocking.

``port`` is anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB0``, ``/dev/serial0``,
a pseudo-terminal such as ``/dev/pts/7`` (what the simulators and tests use), or a URL
like ``socket://host:port`` or ``loop://``.
"""

from __future__ import annotations

import logging
import os
import select
import time
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
        self._poll: Any = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is not None:
            return
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0,
                                                 write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SensorError(f"{self.sensor}: cannot open {self.port}: {exc}") from exc
        log.info("%s: opened %s at %d baud", self.sensor, self.port, self.baudrate)

    def read_available(self, limit: int = 65536) -> bytes:
        """Whatever the port holds right now (b"" when nothing), never blocking."""
        if self._serial is None:
            raise SensorError(f"{self.sensor}: {self.port} is not open")
        try:
            fd = getattr(self._serial, "fd", None)
            if isinstance(fd, int):
                # a device node: poll(), then read what is buffered. pyserial's read() waits
                # in select(), which fails for descriptors above 1023 (a simulation with
                # hundreds of ports gets there); poll() has no such limit and, like select(),
                # makes the tty layer hand over what it has received
                if self._poll is None:
                    self._poll = select.poll()
                    self._poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
                events = self._poll.poll(0)
                if not events:
                    return b""
                try:
                    data = os.read(fd, limit)
                except BlockingIOError:
                    return b""
                if not data:  # readable yet empty: end of file, the device hung up
                    raise SensorError(f"{self.sensor}: {self.port} hung up (device unplugged?)")
                return data
            return bytes(self._serial.read(limit))
        except (serial.SerialException, OSError) as exc:
            raise SensorError(f"{self.sensor}: reading {self.port} failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise SensorError(f"{self.sensor}: {self.port} is not open")
        try:
            deadline = time.monotonic() + 1.0
            while data:  # write_timeout=0: a write takes what fits, never waiting in select()
                n = self._serial.write(data) or 0
                data = data[n:]
                if data and time.monotonic() > deadline:
                    raise SensorError(f"{self.sensor}: {self.port} does not take data (flow control?)")
                if data:
                    time.sleep(0.001)
        except (serial.SerialException, OSError) as exc:
            raise SensorError(f"{self.sensor}: writing {self.port} failed: {exc}") from exc

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None
                self._poll = None
