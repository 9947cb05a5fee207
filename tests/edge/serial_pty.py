"""Pseudo-terminals standing in for serial devices (GPS, vitals monitor, ELM327)."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edge.sensors.base import Reading, Sensor


@dataclass
class Pty:
    master: int  # the device's end: what the test writes is what the "device" sends
    path: str  # the driver's end, e.g. /dev/pts/7

    def send(self, data: bytes) -> None:
        os.write(self.master, data)


@contextmanager
def open_pty() -> Iterator[Pty]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield Pty(master, os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)


def poll_until(sensor: Sensor, done: Callable[[list[Reading]], bool], timeout: float = 5.0,
               step: Callable[[], None] | None = None) -> list[Reading]:
    """Poll ``sensor`` until ``done(readings)`` or the timeout; returns all readings."""
    readings: list[Reading] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step is not None:
            step()
        readings += sensor.poll()
        if done(readings):
            break
        time.sleep(0.01)
    return readings
