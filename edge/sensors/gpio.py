"""GPIO sensors through gpiozero: buttons, digital inputs and an MCP3008 ADC.

* ``ButtonSensor`` (``type = "button"``): a panic or nurse-call button. Kind
  ``button``, data ``{"input": name, "event": "press"}`` when pressed and
  ``{"input": name, "event": "release", "held_ms": N}`` when let go.
  Options: ``pin`` (required, BCM number or name such as ``"GPIO17"``), ``pull_up``
  (true: the button connects the pin to ground), ``bounce_time`` (0.05 s).
* ``DigitalInputSensor`` (``type = "gpio"``): a door contact, an ignition line. Kind
  ``gpio``, data ``{"input": name, "active": bool, "state": label}``, once at start and
  at every change. Options: ``pin`` (required), ``pull_up`` (false: a pull-down, the
  input is active when high; true: a pull-up, active when pulled low),
  ``bounce_time`` (0.05 s), ``active_label`` ("on"),
  ``inactive_label`` ("off") - e.g. "open" / "closed" for a door.
* ``AdcSensor`` (``type = "adc"``): an analog sensor on an MCP3008 channel. Kind
  ``adc``, data ``{"input": name, "value": offset + scale * fraction, "raw": 0-1023,
  "unit": unit}`` every ``period`` seconds. Options: ``channel`` (0-7, required),
  ``spi_device`` (chip select 0 or 1; 0), ``scale`` (1.0), ``offset`` (0.0), ``unit``
  (""), ``period`` (1.0 s).

Debouncing is done here, not by gpiozero (whose mock pins, used by the simulators and
tests, do not debounce): ``Debouncer`` reports a change once the new level has held
for ``bounce_time``, stamped with the time of its first edge; shorter glitches are
counted as ``bounces`` and never reported. Every sensor takes a ``pin_factory`` (a
gpiozero ``MockFactory`` for simulation; default: the board's) so simulated devices
can each have their own pins in one process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.sensors.base import Reading, SensorError
from edge.sensors.options import opt_bool, opt_float, opt_int, opt_str

__all__ = ["AdcSensor", "ButtonSensor", "Debouncer", "DigitalInputSensor", "make_adc", "make_button",
           "make_gpio"]

log = logging.getLogger("vigil.edge")

Clock = Callable[[], float]


class Debouncer:
    """Pure: edges in (with their time), stable changes out."""

    def __init__(self, bounce_time: float, state: bool) -> None:
        self.bounce_time = bounce_time
        self.state = state  # the last reported level
        self._candidate: bool | None = None
        self._since = 0.0  # monotonic time of the candidate's first edge
        self._since_wall = 0.0
        self.bounces = 0

    def edge(self, now: float, wall: float, level: bool) -> None:
        if level == self.state:
            if self._candidate is not None:
                self.bounces += 1  # went back before it settled: a glitch
                self._candidate = None
        elif self._candidate != level:
            self._candidate, self._since, self._since_wall = level, now, wall

    def settle(self, now: float, wall: float, level: bool | None = None) -> tuple[bool, float] | None:
        """A stable change as (new level, wall time of its first edge), or None. ``level``,
        the pin's level now, catches edges the hardware did not report."""
        if level is not None and self._candidate is None and level != self.state:
            self._candidate, self._since, self._since_wall = level, now, wall
        if self._candidate is not None and now - self._since >= self.bounce_time:
            self.state, self._candidate = self._candidate, None
            return self.state, self._since_wall
        return None


class _EdgeInput:
    """A gpiozero input whose edges are queued from gpiozero's thread and debounced in poll."""

    def __init__(self, name: str, pin: Any, pull_up: bool, bounce_time: float,
                 pin_factory: Any, clock: Clock, wall: Clock) -> None:
        if pin is None or pin == "":
            raise ValueError("pin: a GPIO pin is required (e.g. 17 or \"GPIO17\")")
        self.name = name
        self.pin = pin
        self.pull_up = pull_up
        self.bounce_time = float(bounce_time)
        self.pin_factory = pin_factory
        self._clock, self._wall = clock, wall
        self._device: Any = None
        self._lock = threading.Lock()
        self._edges: list[tuple[float, float, bool]] = []
        self.debouncer = Debouncer(self.bounce_time, False)
        self._started = False

    def open(self) -> None:
        from gpiozero import DigitalInputDevice
        from gpiozero.exc import GPIOZeroError

        try:
            self._device = DigitalInputDevice(self.pin, pull_up=self.pull_up, bounce_time=None,
                                              pin_factory=self.pin_factory)
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise SensorError(f"{self.name}: cannot open pin {self.pin}: {exc}") from exc
        self.debouncer = Debouncer(self.bounce_time, bool(self._device.is_active))
        self._device.when_activated = lambda: self._edge(True)
        self._device.when_deactivated = lambda: self._edge(False)
        self._started = False

    def _edge(self, level: bool) -> None:
        with self._lock:
            self._edges.append((self._clock(), self._wall(), level))

    def changes(self) -> tuple[bool, list[tuple[bool, float]]]:
        """(is this the first call, debounced changes since the last call)."""
        if self._device is None:
            raise SensorError(f"{self.name}: not open")
        with self._lock:
            edges, self._edges = self._edges, []
        if not self._started:  # at start, the level as it is now; what came before is history
            self._started = True
            self.debouncer = Debouncer(self.bounce_time, bool(self._device.is_active))
            return True, []
        out = []
        for now, wall, level in edges:
            change = self.debouncer.settle(now, wall)
            if change is not None:
                out.append(change)
            self.debouncer.edge(now, wall, level)
        change = self.debouncer.settle(self._clock(), self._wall(), bool(self._device.is_active))
        if change is not None:
            out.append(change)
        return False, out

    @property
    def active(self) -> bool:
        return self.debouncer.state

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None


class ButtonSensor:
    kind = "button"

    def __init__(self, name: str, pin: Any, pull_up: bool = True, bounce_time: float = 0.05,
                 pin_factory: Any = None, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.name = name
        self._input = _EdgeInput(name, pin, pull_up, bounce_time, pin_factory, clock, wall)
        self._pressed_at: float | None = None
        self._presses = 0

    def open(self) -> None:
        self._input.open()

    def poll(self) -> list[Reading]:
        _, changes = self._input.changes()
        out = []
        for pressed, wall in changes:
            if pressed:
                self._presses += 1
                self._pressed_at = wall
                out.append(Reading(self.kind, {"input": self.name, "event": "press"}, int(wall * 1000)))
            else:
                held = 0 if self._pressed_at is None else round((wall - self._pressed_at) * 1000)
                out.append(Reading(self.kind, {"input": self.name, "event": "release", "held_ms": held},
                                   int(wall * 1000)))
        return out

    def close(self) -> None:
        self._input.close()

    def stats(self) -> dict[str, int]:
        return {"presses": self._presses, "bounces": self._input.debouncer.bounces}


class DigitalInputSensor:
    kind = "gpio"

    def __init__(self, name: str, pin: Any, pull_up: bool = False, bounce_time: float = 0.05, active_label: str = "on", inactive_label: str = "off",
                 pin_factory: Any = None, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.name = name
        self.labels = (inactive_label, active_label)
        self._input = _EdgeInput(name, pin, pull_up, bounce_time, pin_factory, clock, wall)
        self._wall = wall
        self._changes = 0

    def open(self) -> None:
        self._input.open()

    def _reading(self, active: bool, wall: float) -> Reading:
        return Reading(self.kind, {"input": self.name, "active": active, "state": self.labels[active]},
                       int(wall * 1000))

    def poll(self) -> list[Reading]:
        first, changes = self._input.changes()
        out = [self._reading(self._input.active, self._wall())] if first else []
        self._changes += len(changes)
        return out + [self._reading(active, wall) for active, wall in changes]

    def close(self) -> None:
        self._input.close()

    def stats(self) -> dict[str, int]:
        return {"changes": self._changes, "bounces": self._input.debouncer.bounces}


class AdcSensor:
    kind = "adc"

    def __init__(self, name: str, channel: int, spi_device: int = 0, scale: float = 1.0, offset: float = 0.0,
                 unit: str = "", period: float = 1.0, pin_factory: Any = None,
                 clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        if not 0 <= int(channel) <= 7:
            raise ValueError(f"channel: an MCP3008 has channels 0-7, got {channel}")
        self.name = name
        self.channel = int(channel)
        self.spi_device = int(spi_device)
        self.scale, self.offset, self.unit = float(scale), float(offset), unit
        self.period = float(period)
        self.pin_factory = pin_factory
        self._clock, self._wall = clock, wall
        self._adc: Any = None
        self._next = 0.0
        self._samples = 0
        self._errors = 0

    def open(self) -> None:
        from gpiozero import MCP3008, Device
        from gpiozero.exc import GPIOZeroError

        if self.pin_factory is not None and Device.pin_factory is None:
            # gpiozero 2.0's software SPI bus builds itself on the default factory even
            # when given another one; without a board that default does not exist
            Device.pin_factory = self.pin_factory
        try:
            self._adc = MCP3008(channel=self.channel, port=0, device=self.spi_device, pin_factory=self.pin_factory)
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise SensorError(f"{self.name}: cannot open MCP3008 channel {self.channel}: {exc}") from exc
        self._next = self._clock()

    def read(self) -> Reading:
        if self._adc is None:
            raise SensorError(f"{self.name}: not open")
        try:
            raw = int(self._adc.raw_value)
        except (OSError, RuntimeError) as exc:
            self._errors += 1
            raise SensorError(f"{self.name}: reading the MCP3008 failed: {exc}") from exc
        self._samples += 1
        value = self.offset + self.scale * raw / 1023.0
        return Reading(self.kind, {"input": self.name, "value": round(value, 4), "raw": raw, "unit": self.unit},
                       int(self._wall() * 1000))

    def poll(self) -> list[Reading]:
        now = self._clock()
        if now < self._next:
            return []
        self._next = max(self._next + self.period, now)
        return [self.read()]

    def close(self) -> None:
        if self._adc is not None:
            self._adc.close()
            self._adc = None

    def stats(self) -> dict[str, int]:
        return {"samples": self._samples, "errors": self._errors}


def _pin(options: dict[str, Any]) -> int | str:
    pin = options.get("pin")
    if isinstance(pin, bool) or not isinstance(pin, int | str) or pin == "":
        raise ValueError(f"pin: a GPIO pin is required (e.g. 17 or \"GPIO17\"), got {pin!r}")
    return pin


def make_button(name: str, options: dict[str, Any]) -> ButtonSensor:
    return ButtonSensor(name, _pin(options), opt_bool(options, "pull_up", True),
                        opt_float(options, "bounce_time", 0.05), options.get("pin_factory"))


def make_gpio(name: str, options: dict[str, Any]) -> DigitalInputSensor:
    return DigitalInputSensor(name, _pin(options), opt_bool(options, "pull_up", False),
                              opt_float(options, "bounce_time", 0.05), opt_str(options, "active_label", "on"),
                              opt_str(options, "inactive_label", "off"), options.get("pin_factory"))


def make_adc(name: str, options: dict[str, Any]) -> AdcSensor:
    return AdcSensor(name, opt_int(options, "channel", lo=0, hi=7), opt_int(options, "spi_device", 0, lo=0, hi=1),
                     opt_float(options, "scale", 1.0), opt_float(options, "offset", 0.0), opt_str(options, "unit", ""),
                     opt_float(options, "period", 1.0, positive=True), options.get("pin_factory"))
