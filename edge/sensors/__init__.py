"""Sensor drivers: each a pure parser plus a thin I/O shell, behind one interface.

Built-in sensor types (the ``type`` of a ``[[sensors]]`` entry) and their options; each
driver module documents its own in full:

=========  ==================  =======================================================
type       kind of readings    options (default)
=========  ==================  =======================================================
gps        gps                 port, baudrate (9600), idle_flush (1.5 s)
vitals     vitals              port, baudrate (9600)
obd        obd                 port, baudrate (38400), period (1.0 s), timeout (2.0 s)
button     button              pin, pull_up (true), bounce_time (0.05 s)
gpio       gpio                pin, pull_up (false), bounce_time (0.05 s),
                               active_label ("on"), inactive_label ("off")
adc        adc                 channel (0-7), spi_device (0), scale (1.0), offset (0.0),
                               unit (""), period (1.0 s)
=========  ==================  =======================================================

Importing this package registers them with ``edge.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edge.sensors.base import Reading, Sensor, SensorError
from edge.sensors.gpio import make_adc, make_button, make_gpio
from edge.sensors.gps import make_gps
from edge.sensors.obd import make_obd
from edge.sensors.vitals import make_vitals

__all__ = ["DRIVER_FACTORIES", "Reading", "Sensor", "SensorError", "make_sensor"]

DriverFactory = Callable[[str, dict[str, Any]], Sensor]

DRIVER_FACTORIES: dict[str, DriverFactory] = {
    "gps": make_gps,
    "vitals": make_vitals,
    "obd": make_obd,
    "button": make_button,
    "gpio": make_gpio,
    "adc": make_adc,
}


def make_sensor(type_: str, name: str, options: Mapping[str, Any]) -> Sensor:
    """An unopened sensor of a built-in type; ValueError naming the bad option otherwise."""
    try:
        factory = DRIVER_FACTORIES[type_]
    except KeyError:
        raise ValueError(f"type: unknown sensor type {type_!r} (built in: {', '.join(DRIVER_FACTORIES)})") from None
    return factory(name, dict(options))


def _register() -> None:
    try:
        from edge.registry import register_sensor_type
    except ModuleNotFoundError:  # the agent's registry is not part of this install
        return
    def adapt(factory: DriverFactory) -> Callable[[Any], Sensor]:
        return lambda cfg: factory(cfg.name, dict(cfg.options))

    for type_, factory in DRIVER_FACTORIES.items():
        register_sensor_type(type_, adapt(factory))


_register()
