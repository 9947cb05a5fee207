"""Many simulated devices in one process: the simulation loop, its clock, the CLI.

Two ways to use it:

* ``run_simulation(vehicles, patients, seed, on_reading, ...)`` builds the devices,
  opens their sensors and polls them itself, calling ``on_reading(device_id,
  sensor_name, reading)`` for every reading - what ``vigil edge simulate --print``
  does.
* ``Simulation(...)`` gives the devices (``sim.devices``: each a ``device_id`` and a
  list of ordinary ``Sensor``s) to someone else - the agent - to open and poll, while
  ``sim.start()`` runs a background thread that moves the world forward (writes NMEA
  and vitals lines, answers OBD requests, drives GPIO pins). ``sim.stop()`` ends it,
  ``sim.close()`` releases the pseudo-terminals and pins. For the agent, per device::

      sim = Simulation(vehicles=3, patients=2, seed=7, speedup=10)
      sim.start()
      for device in sim.devices:
          # device.sensor_types: {"gps": "gps", "obd": "obd", "ignition": "gpio", ...}
          config = <a Config for device.device_id whose [[sensors]] are those names/types>
          Agent(config, sensors=device.sensors)  # same order as device.sensor_types

  The drivers stamp readings with the simulation's clock, so with a speedup the
  events' ``ts`` run ahead of the wall clock.

Time is simulated: ``SimClock`` runs ``speedup`` times faster than the wall clock
from ``start`` (default: now); with ``manual=True`` it only moves when told
(``sim.step(dt)``), which makes a run a pure function of its seed.

``incidents=True`` adds the scripted incidents of ``edge.sim.incidents`` (a speeding
vehicle, a zone crossing, a deteriorating patient, a probe falling off, every five
simulated minutes from the start) to the devices the schedule names.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.sensors.base import Reading, Sensor, SensorError
from edge.sim.devices import SimulatedDevice, SimulatedPatient, SimulatedVehicle
from edge.sim.incidents import incidents_for
from edge.sim.patient import PatientModel
from edge.sim.vehicle import TrackModel, VehicleModel, load_traffic

__all__ = ["OnReading", "SimClock", "Simulation", "run_simulation", "simulate_cli"]

log = logging.getLogger("vigil.edge")

OnReading = Callable[[str, str, Reading], None]
FDS_PER_DEVICE = 6  # two ptys (four fds) and the drivers' own opens of them


class SimClock:
    """Simulated seconds since the Unix epoch."""

    def __init__(self, start: float | None = None, speedup: float = 1.0, *, manual: bool = False) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.start = float(int(time.time()) if start is None else start)
        self.speedup = speedup
        self.manual = manual
        self._t0 = time.monotonic()
        self._now = self.start

    def __call__(self) -> float:
        if self.manual:
            return self._now
        return self.start + (time.monotonic() - self._t0) * self.speedup

    def advance(self, dt: float) -> float:
        if not self.manual:
            raise RuntimeError("only a manual clock can be advanced")
        self._now += dt
        return self._now


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class Simulation:
    def __init__(self, vehicles: int = 1, patients: int = 0, seed: int = 1, *, start: float | None = None,
                 speedup: float = 1.0, manual: bool = False, traffic: str | Path | None = None,
                 tick: float = 0.05, line_noise: float = 0.0, incidents: bool = False) -> None:
        if vehicles < 0 or patients < 0:
            raise ValueError("vehicles and patients must not be negative")
        _raise_fd_limit(64 + FDS_PER_DEVICE * (vehicles + patients))
        self.clock = SimClock(start, speedup, manual=manual)
        self.seed = seed
        self.tick = tick
        # an OBD request is answered one world tick later: allow for a few ticks of simulated time
        obd_timeout = max(2.0, 4 * tick * speedup)
        now = self.clock()
        self.devices: list[SimulatedDevice] = []
        tracks: list[TrackModel] = load_traffic(traffic, vehicles) if traffic else []
        if traffic and len(tracks) < vehicles:
            raise ValueError(f"{traffic} has only {len(tracks)} vehicles")
        try:
            for i in range(vehicles):
                device_id = f"veh-{i + 1:03d}"
                scripted = incidents_for(device_id) if incidents else ()
                model: VehicleModel | TrackModel = tracks[i] if tracks else VehicleModel.create(i, seed, scripted)
                self.devices.append(SimulatedVehicle(device_id, model, now, self.clock,
                                                     talker="GN" if i % 2 else "GP", obd_timeout=obd_timeout,
                                                     line_noise=line_noise))
            for i in range(patients):
                device_id = f"bed-{i + 1:03d}"
                scripted = incidents_for(device_id) if incidents else ()
                self.devices.append(SimulatedPatient(device_id, PatientModel.create(i, seed, incidents=scripted),
                                                     now, self.clock, line_noise=line_noise))
        except BaseException:
            self.close()
            raise
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- the world ---------------------------------------------------------------------

    def advance(self) -> float:
        """Move every device to the clock's now; returns it."""
        with self._lock:
            now = self.clock()
            for device in self.devices:
                device.advance(now)
            return now

    def start(self) -> None:
        """Advance the world in a background thread until ``stop()``; the sensors are
        someone else's to open and poll."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._world, name="vigil-sim-world", daemon=True)
        self._thread.start()

    def _world(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.advance()
            except Exception:
                log.exception("simulation world step failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- polling the sensors ourselves ---------------------------------------------------

    def open_sensors(self) -> None:
        for device in self.devices:
            for sensor in device.sensors:
                sensor.open()

    def poll(self, conversation_rounds: int = 2) -> list[tuple[str, str, Reading]]:
        """Poll every sensor once; then, ``conversation_rounds`` times, let the simulated
        adapters answer and poll the sensors that converse with theirs (OBD), so a
        request/response cycle need not wait a world tick per request."""
        out: list[tuple[str, str, Reading]] = []
        for device in self.devices:
            self._poll(device, device.sensors, out)
        for _ in range(conversation_rounds):
            for device in self.devices:
                if device.conversing_sensors:
                    device.service()
                    self._poll(device, device.conversing_sensors, out)
        return out

    @staticmethod
    def _poll(device: SimulatedDevice, sensors: list[Sensor], out: list[tuple[str, str, Reading]]) -> None:
        for sensor in sensors:
            try:
                readings = sensor.poll()
            except SensorError as exc:
                log.warning("%s/%s: %s", device.device_id, sensor.name, exc)
                continue
            out.extend((device.device_id, sensor.name, r) for r in readings)

    def step(self, dt: float) -> list[tuple[str, str, Reading]]:
        """Manual clock: move ``dt`` simulated seconds and collect what the sensors report.
        Each OBD request needs a world step to be answered, hence the few rounds."""
        self.clock.advance(dt)
        out: list[tuple[str, str, Reading]] = []
        for _ in range(4):
            self.advance()
            out += self.poll()
        return out

    def close(self) -> None:
        self.stop()
        for device in self.devices:
            device.close()

    def stats(self) -> dict[str, Any]:
        return {d.device_id: {s.name: s.stats() for s in d.sensors} for d in self.devices}


def run_simulation(vehicles: int, patients: int, seed: int, on_reading: OnReading, *, speedup: float = 1.0,
                   duration: float | None = None, traffic: str | Path | None = None, start: float | None = None,
                   stop: threading.Event | None = None, tick: float = 0.05, line_noise: float = 0.0,
                   incidents: bool = False) -> Simulation:
    """Run simulated devices through their real drivers, calling ``on_reading(device_id,
    sensor_name, reading)`` for every reading, for ``duration`` simulated seconds (or
    until ``stop`` is set). Returns the (closed) simulation, for its stats and events."""
    sim = Simulation(vehicles, patients, seed, start=start, speedup=speedup, traffic=traffic, tick=tick,
                     line_noise=line_noise, incidents=incidents)
    stop = stop or threading.Event()
    try:
        sim.open_sensors()
        end = None if duration is None else sim.clock.start + duration
        while not stop.is_set():
            now = sim.advance()
            for device_id, sensor_name, reading in sim.poll():
                on_reading(device_id, sensor_name, reading)
            if end is not None and now >= end:
                break
            stop.wait(tick)
    finally:
        sim.close()
    return sim


def simulate_cli(args: Any) -> int:
    """``vigil edge simulate``."""
    out = sys.stdout
    counts: dict[str, int] = {}

    def on_reading(device_id: str, sensor: str, reading: Reading) -> None:
        counts[reading.kind] = counts.get(reading.kind, 0) + 1
        if args.print_readings:
            out.write(json.dumps({"device": device_id, "sensor": sensor, "kind": reading.kind, "ts": reading.ts,
                                  "data": reading.data}, separators=(",", ":")) + "\n")
            out.flush()

    try:
        run_simulation(args.vehicles, args.patients, args.seed, on_reading, speedup=args.speedup,
                       duration=args.duration, traffic=args.traffic, line_noise=args.line_noise,
                       incidents=getattr(args, "incidents", False))
    except KeyboardInterrupt:
        pass
    except (ValueError, OSError) as exc:
        print(f"vigil edge simulate: {exc}", file=sys.stderr)
        return 1
    print(f"readings: {json.dumps(counts, sort_keys=True)}", file=sys.stderr)
    return 0
