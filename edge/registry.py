"""Sensor types by name: how a ``[[sensors]]`` entry of a device's config becomes a driver.

Drivers register themselves when ``edge.sensors`` is imported::

    from edge.registry import register_sensor_type
    register_sensor_type("gps", lambda cfg: GpsSensor(cfg.name, cfg.option("port"), ...))

A factory receives the validated ``SensorConfig`` (common keys as attributes,
driver-specific keys in ``cfg.options``) and returns an unopened ``Sensor``. It raises
``ValueError`` (or ``SensorError``) naming the bad option when the options do not suit it;
the agent reports that as ``sensors[i].<key>: ...``.

Third-party or test drivers live in any importable module listed in the config's
``[agent] sensor_modules``; importing it registers its types.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import SensorConfig
    from edge.sensors.base import Sensor

__all__ = ["SENSOR_TYPES", "SensorFactory", "load_sensor_modules", "register_sensor_type"]

log = logging.getLogger("vigil.edge")

SensorFactory = Callable[["SensorConfig"], "Sensor"]

SENSOR_TYPES: dict[str, SensorFactory] = {}


def register_sensor_type(name: str, factory: SensorFactory) -> None:
    """Make ``type = "<name>"`` in a ``[[sensors]]`` entry build its sensor with ``factory``.

    Registering the same name again replaces the factory (the last import wins), which
    lets a site override a built-in driver."""
    if not name or not isinstance(name, str):
        raise ValueError(f"sensor type name must be a non-empty string, got {name!r}")
    if name in SENSOR_TYPES and SENSOR_TYPES[name] is not factory:
        log.debug("sensor type %s re-registered", name)
    SENSOR_TYPES[name] = factory


def load_sensor_modules(modules: Iterable[str] = ()) -> None:
    """Import the built-in drivers and any extra modules, which register their types."""
    importlib.import_module("edge.sensors")
    for name in modules:
        importlib.import_module(name)
