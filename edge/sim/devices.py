"""Simulated devices: a model of the world wired to the real drivers at the lowest layer.

A ``SimulatedVehicle`` has a GPS receiver writing NMEA into a pseudo-terminal, an ELM327
answering OBD-II requests on another, and GPIO lines (ignition, door, panic button) on
its own gpiozero ``MockFactory``. A ``SimulatedPatient`` has a bedside monitor writing
vitals lines into a pseudo-terminal and a nurse-call button. Their ``sensors`` are the
ordinary drivers (``GpsSensor``, ``ObdSensor``, ``VitalsSensor``, ``DigitalInputSensor``,
``ButtonSensor``) opened on the device ends: whoever polls them - the simulation's
own loop or a real agent - cannot tell them from hardware.

``advance(now)`` moves the device's model to the simulated instant ``now`` (seconds since
the epoch) and makes the hardware show it: one NMEA epoch per simulated second, one
monitor line every ``interval`` seconds (``line_noise``: the share of lines that arrive
with a corrupted byte), pins driven to the new levels, pending OBD requests answered. The drivers are given the simulation's clock, so their timestamps
are simulated time too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tty
from collections.abc import Callable
from typing import Protocol

from gpiozero.pins.mock import MockFactory

from edge.sensors.base import Sensor
from edge.sensors.gpio import ButtonSensor, DigitalInputSensor
from edge.sensors.gps import GpsSensor
from edge.sensors.obd import ObdSensor
from edge.sensors.vitals import VitalsSensor, encode_vitals
from edge.sim.elm327 import Elm327Emulator
from edge.sim.gps_out import nmea_epoch
from edge.sim.patient import PatientModel
from edge.sim.vehicle import VehicleState

__all__ = ["PINS", "LineNoise", "SimulatedDevice", "SimulatedPatient", "SimulatedVehicle"]

log = logging.getLogger("vigil.edge")

Clock = Callable[[], float]

# BCM pins of the simulated boards
PINS = {"panic": 17, "door": 22, "ignition": 23, "nurse_call": 17}


class _VehicleModel(Protocol):
    t: float
    log: list[tuple[float, str]]

    def step(self, dt: float) -> None: ...

    def state(self) -> VehicleState: ...


class _Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.dropped = 0

    def send(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:  # nobody reads the port: the bytes are lost, as on a real line
            self.dropped += len(data)

    def receive(self) -> bytes:
        try:
            return os.read(self.master, 4096)  # non-blocking
        except OSError:  # nothing there (EAGAIN), or the driver end is closed (EIO)
            return b""

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class LineNoise:
    """Corrupts a share of the lines a simulated device sends (one byte flipped), as a
    noisy serial cable does; seeded, so a run stays reproducible. ``rate`` 0 sends
    every line intact."""

    def __init__(self, rate: float, seed: str) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.corrupted = 0

    def __call__(self, data: bytes) -> bytes:
        if self.rate <= 0:
            return data
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            if len(line) > 2 and self.rng.random() < self.rate:
                b = bytearray(line)
                b[self.rng.randrange(1, len(b) - 1)] ^= self.rng.randrange(1, 128)
                lines[i] = bytes(b)
                self.corrupted += 1
        return b"\n".join(lines)


class _Line:
    """One mock pin, driven only when its level changes."""

    def __init__(self, factory: MockFactory, pin: int) -> None:
        self.factory, self.pin = factory, pin
        self.level: bool | None = None

    def drive(self, high: bool) -> None:
        if high == self.level:
            return
        pin = self.factory.pin(self.pin)
        if pin.function != "input":
            return  # the driver has not opened it yet
        pin.drive_high() if high else pin.drive_low()
        self.level = high


class SimulatedDevice:
    """What the simulation (or an agent) needs of a simulated device."""

    device_id: str
    sensors: list[Sensor]

    @property
    def events(self) -> list[tuple[float, str]]:
        """What happened in the model so far: (simulated time, description)."""
        return []

    @property
    def conversing_sensors(self) -> list[Sensor]:
        """Sensors that talk request/response with their simulated hardware (see ``service``)."""
        return []

    def service(self) -> None:
        """Let the simulated hardware answer what its drivers asked (``advance`` does this too)."""

    @property
    def sensor_types(self) -> dict[str, str]:
        """Sensor name -> its type in edge.sensors (for an agent building its config)."""
        return {s.name: str(getattr(s, "kind", "")) for s in self.sensors}

    def advance(self, now: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SimulatedVehicle(SimulatedDevice):
    def __init__(self, device_id: str, model: _VehicleModel, start: float, clock: Clock, *,
                 talker: str = "GP", obd_timeout: float = 2.0, line_noise: float = 0.0) -> None:
        self.device_id = device_id
        self.model = model
        self.start = start
        self.talker = talker
        self._t = start
        self._next_epoch = float(int(start) + 1)
        self._state = model.state()
        self.gps_port, self.obd_port = _Pty(), _Pty()
        self.noise = LineNoise(line_noise, f"noise:{device_id}")
        self.elm = Elm327Emulator(lambda: (self._state.ignition, self._state.speed * 3.6, self._state.rpm))
        self.pins = MockFactory()
        self._lines = {name: _Line(self.pins, PINS[name]) for name in ("ignition", "door", "panic")}
        self.sensors: list[Sensor] = [
            GpsSensor("gps", self.gps_port.path, clock=clock),
            ObdSensor("obd", self.obd_port.path, period=1.0, timeout=obd_timeout, clock=clock, wall_clock=clock),
            DigitalInputSensor("ignition", PINS["ignition"], pin_factory=self.pins, clock=clock, wall=clock),
            DigitalInputSensor("door", PINS["door"], active_label="open", inactive_label="closed",
                               pin_factory=self.pins, clock=clock, wall=clock),
            ButtonSensor("panic", PINS["panic"], pull_up=True, pin_factory=self.pins, clock=clock, wall=clock),
        ]

    @property
    def events(self) -> list[tuple[float, str]]:
        return [(self.start + t, what) for t, what in self.model.log]

    @property
    def state(self) -> VehicleState:
        return self._state

    def advance(self, now: float) -> None:
        if now > self._t:
            # one GPS epoch per whole simulated second, the model stepped to each of them
            while self._next_epoch <= now:
                self.model.step(self._next_epoch - self._t)
                self._t = self._next_epoch
                self._state = self.model.state()
                if now - self._t < 5.0:  # fell far behind: do not flood the port
                    self.gps_port.send(self.noise(nmea_epoch(self._t, self._state, self.talker)))
                self._next_epoch += 1.0
            self.model.step(now - self._t)
            self._t = now
            self._state = self.model.state()
        s = self._state
        self._lines["ignition"].drive(s.ignition)
        self._lines["door"].drive(s.door_open)
        self._lines["panic"].drive(not s.panic)  # the button pulls the line low
        self.service()

    @property
    def conversing_sensors(self) -> list[Sensor]:
        return self.sensors[1:2]

    def service(self) -> None:
        """Answer whatever the OBD driver asked."""
        request = self.obd_port.receive()
        if request:
            reply = self.elm.receive(request)
            if reply:
                self.obd_port.send(reply)

    def close(self) -> None:
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception:  # closing what was never opened
                log.debug("closing %s of %s", sensor.name, self.device_id, exc_info=True)
        self.gps_port.close()
        self.obd_port.close()
        self.pins.reset()


class SimulatedPatient(SimulatedDevice):
    def __init__(self, device_id: str, model: PatientModel, start: float, clock: Clock, *,
                 interval: float = 2.0, line_noise: float = 0.0) -> None:
        self.device_id = device_id
        self.model = model
        self.start = start
        self.interval = interval
        self._t = start
        self._next_line = start + interval
        self.monitor_port = _Pty()
        self.noise = LineNoise(line_noise, f"noise:{device_id}")
        self.pins = MockFactory()
        self._call = _Line(self.pins, PINS["nurse_call"])
        self.sensors: list[Sensor] = [
            VitalsSensor("monitor", self.monitor_port.path, clock=clock),
            ButtonSensor("nurse_call", PINS["nurse_call"], pull_up=True, pin_factory=self.pins, clock=clock,
                         wall=clock),
        ]

    @property
    def events(self) -> list[tuple[float, str]]:
        return [(self.start + t, what) for t, what in self.model.log]

    def advance(self, now: float) -> None:
        while self._next_line <= now:
            self.model.step(self._next_line - self._t)
            self._t = self._next_line
            if now - self._t < 5 * self.interval:
                self.monitor_port.send(self.noise(encode_vitals(self.model.observe())))
            self._next_line += self.interval
        if now > self._t:
            self.model.step(now - self._t)
            self._t = now
        self._call.drive(not self.model.calling)

    def close(self) -> None:
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception:
                log.debug("closing %s of %s", sensor.name, self.device_id, exc_info=True)
        self.monitor_port.close()
        self.pins.reset()
