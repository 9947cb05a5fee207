"""A test sensor: counts at a fixed rate, so every event can be accounted for.

Registered as sensor type ``counter`` when imported (configs name this module in
``[agent] sensor_modules``, which is also how a subprocess agent finds it). Options:
``rate`` (readings per second, default 100), ``limit`` (stop after this many readings),
``fail_open`` (refuse to open: for check).
"""

from __future__ import annotations

import os
import time
from typing import Any

from edge.config import SensorConfig
from edge.registry import register_sensor_type
from edge.sensors.base import Reading, SensorError


class CounterSensor:
    def __init__(self, name: str, rate: float, limit: int | None = None, fail_open: bool = False) -> None:
        self.name = name
        self.rate = rate
        self.limit = limit
        self.fail_open = fail_open
        self.n = 0
        self._started = 0.0
        self.boot = os.getpid()

    def open(self) -> None:
        if self.fail_open:
            raise SensorError(f"{self.name}: no such device /dev/counter")
        self._started = time.monotonic()

    def poll(self) -> list[Reading]:
        due = int((time.monotonic() - self._started) * self.rate) + 1
        if self.limit is not None:
            due = min(due, self.limit)
        now = int(time.time() * 1000)
        out = [Reading("counter", {"n": i, "boot": self.boot}, now) for i in range(self.n, due)]
        self.n = max(self.n, due)
        return out

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"counted": self.n}


def _factory(cfg: SensorConfig) -> CounterSensor:
    rate: Any = cfg.option("rate", 100.0)
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise ValueError(f"sensors[{cfg.index}].rate: must be a positive number, got {rate!r}")
    return CounterSensor(cfg.name, float(rate), cfg.option("limit", None), bool(cfg.option("fail_open", False)))


register_sensor_type("counter", _factory)
