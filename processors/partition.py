"""Everything the processors do to one partition of ``telemetry``, without I/O.

`PartitionProcessor` takes the partition's records in log order (`process`), the wall
clock (`tick`) and the news that the consumer has read everything there is
(`caught_up`), and returns the records to write: alert changes, device-state snapshots
and late events. `snapshot` is its whole state together with the offset of the next
record to read; `restore` takes it back. The shell (`processors.service`) does the
Kafka side.

Time
----
Each partition has a clock. While the processor is catching up (reading records that
were already in the log), the clock is the newest event time seen: nothing depends on
how fast records are read, so a replay after a crash computes exactly what the first
run computed. Once the consumer reports the end of the partition, the clock also
follows the wall clock from there, so a device that goes silent is noticed (``offline``,
``no_data``) and its windows close even if nothing else arrives. The clock never goes
back.

The rules are ticked when the clock passes a whole ``tick_s``; the window engine is
advanced with the clock at the same moments.

Outputs, deterministic given the input order (see the contract in ``processors``):

* ``alerts``: one record per alert change, key = fingerprint;
* ``device_state``: a device's snapshot each time one of its state windows closes
  (every ``state_window_s`` while it reports), key = device;
* ``late``: an event that arrived after its state window had closed (it still updates
  the rules, which run on each device's own event order), key = device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from edge.wire import Event
from processors.config import ProcessorsConfig
from processors.rules import Alert, PatientMonitor, VehicleMonitor, haversine_m
from processors.windows import (
    LateEvent,
    Query,
    Tumbling,
    WindowEngine,
    WindowResult,
    count,
    maximum,
    mean,
    minimum,
    total,
)

__all__ = ["OutRecord", "PartitionProcessor"]

log = logging.getLogger("vigil.processors")

_FORMAT = 1
_VEHICLE_KINDS = frozenset({"gps", "obd"})
_PATIENT_KINDS = frozenset({"vitals"})


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to write: ``output`` is ``"alerts"``, ``"device_state"`` or ``"late"``."""

    output: str
    key: bytes
    value: bytes
    ts: int


def _state_query(window_ms: int) -> Query:
    return Query("state", Tumbling(window_ms), {
        "count": count(),
        "mean_speed": mean("speed"),
        "max_speed": maximum("speed"),
        "distance_m": total("step_m"),
        "mean_heart_rate": mean("heart_rate"),
        "min_spo2": minimum("spo2"),
    })


class _Clock:
    """The partition's clock (see the module's doc): event time, and wall time once caught up."""

    __slots__ = ("base", "wall")

    def __init__(self, base: int | None = None) -> None:
        self.base = base  # ms; None until the first event
        self.wall: int | None = None  # wall ms at which ``base`` was last caught up

    def now(self, wall_ms: int) -> int | None:
        if self.base is None or self.wall is None:
            return self.base
        return self.base + max(0, wall_ms - self.wall)

    def event(self, ts: int) -> None:
        if self.base is None or ts > self.base:
            self.base = ts

    def reading(self, wall_ms: int) -> None:
        """Records are arriving: the clock stops following the wall."""
        if self.wall is not None:
            self.base = self.now(wall_ms)
            self.wall = None

    def caught_up(self, wall_ms: int) -> None:
        if self.wall is None:
            self.wall = wall_ms


class PartitionProcessor:
    """The window engine and the rule monitors of one partition's devices."""

    def __init__(self, partition: int, config: ProcessorsConfig, offset: int | None = None) -> None:
        self.partition = partition
        self.offset = offset  # the next record to read; None: nothing read yet
        self._config = config
        ws = config.windows
        self._tick_ms = max(1, round(ws.tick_s * 1000))
        self._engine = WindowEngine(
            [_state_query(max(1, round(ws.state_window_s * 1000)))],
            max_out_of_order_ms=round(ws.max_out_of_order_s * 1000),
            grace_ms=round(ws.grace_s * 1000),
            idle_timeout_ms=max(1, round(ws.idle_timeout_s * 1000)),
        )
        self._vehicles: dict[str, VehicleMonitor] = {}
        self._patients: dict[str, PatientMonitor] = {}
        self._clock = _Clock()
        self._last_tick: int | None = None
        self._dormant: set[str] = set()  # not part of the state: found again on the first tick
        self.events = 0
        self.invalid = 0
        self.duplicates = 0
        self.late = 0
        self.alerts = 0

    # -- input ------------------------------------------------------------------------

    def process(self, offset: int, value: bytes | None, wall_ms: int) -> list[OutRecord]:
        """One record of the partition, at ``offset``, in log order."""
        self.offset = offset + 1
        self._clock.reading(wall_ms)
        event = self._parse(offset, value)
        if event is None:
            return []
        out: list[OutRecord] = []
        engine = self._engine
        before = engine.duplicate_count
        data = event.data
        if event.kind == "gps":
            data = self._with_step(self._vehicle(event.device), event)
        result = engine.process(event.device, event.seq, event.ts, data)
        if engine.duplicate_count != before:
            self.duplicates += 1
            return out
        self.events += 1
        self._clock.event(event.ts)
        if result.results:
            self._states(out, result.results)
        if result.late:
            self._late(out, result.late)
        kind = event.kind
        now = self._clock.now(wall_ms)
        self._dormant.discard(event.device)
        if kind in _VEHICLE_KINDS:
            monitor: VehicleMonitor | PatientMonitor = self._vehicle(event.device)
            self._alerts(out, monitor.on_event(event, now), "vehicle")
        elif kind in _PATIENT_KINDS:
            monitor = self._patient(event.device)
            self._alerts(out, monitor.on_event(event, now), "patient")
        self._tick_to(out, now)
        return out

    def caught_up(self, wall_ms: int) -> None:
        """The consumer has read everything in the partition: from now on the clock
        also follows the wall clock."""
        self._clock.caught_up(wall_ms)

    def tick(self, wall_ms: int) -> list[OutRecord]:
        """The wall clock moved (the shell calls this on every poll)."""
        out: list[OutRecord] = []
        self._tick_to(out, self._clock.now(wall_ms))
        return out

    # -- checkpoints ----------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state and the offset of the next record to read, as JSON."""
        return orjson.dumps({
            "format": _FORMAT,
            "partition": self.partition,
            "offset": self.offset,
            "clock": self._clock.base,
            "last_tick": self._last_tick,
            "counts": {"events": self.events, "invalid": self.invalid,
                       "duplicates": self.duplicates, "late": self.late, "alerts": self.alerts},
            "engine": orjson.Fragment(self._engine.snapshot()),
            "vehicles": {d: m.snapshot() for d, m in self._vehicles.items()},
            "patients": {d: m.snapshot() for d, m in self._patients.items()},
        })

    @classmethod
    def restore(cls, config: ProcessorsConfig, snapshot: bytes) -> PartitionProcessor:
        """A processor in the state a `snapshot` recorded, with the rules of ``config``
        (a changed rule applies from the restored state on). Raises ValueError when the
        snapshot is not one."""
        try:
            state = orjson.loads(snapshot)
            if not isinstance(state, dict) or state.get("format") != _FORMAT:
                raise ValueError(f"unknown checkpoint format {state.get('format') if isinstance(state, dict) else None!r}")
            proc = cls(int(state["partition"]), config, state["offset"])
            proc._clock = _Clock(state["clock"])
            proc._last_tick = state["last_tick"]
            counts = state["counts"]
            proc.events, proc.invalid, proc.duplicates = counts["events"], counts["invalid"], counts["duplicates"]
            proc.late, proc.alerts = counts["late"], counts["alerts"]
            proc._engine.restore(orjson.dumps(state["engine"]))
            rules = config.rules
            proc._vehicles = {d: VehicleMonitor.restore(d, rules.vehicle(d), s)
                              for d, s in state["vehicles"].items()}
            proc._patients = {d: PatientMonitor.restore(d, rules.patient(d), s)
                              for d, s in state["patients"].items()}
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed processors checkpoint: {exc!r}") from None
        return proc

    # -- what it is made of -----------------------------------------------------------

    def devices(self) -> int:
        return len(set(self._vehicles) | set(self._patients))

    def _parse(self, offset: int, value: bytes | None) -> Event | None:
        try:
            doc = orjson.loads(value or b"")
            device, seq, ts, kind, data = doc["device"], doc["seq"], doc["ts"], doc["kind"], doc["data"]
            if not (isinstance(device, str) and isinstance(seq, int) and isinstance(ts, int)
                    and isinstance(kind, str) and isinstance(data, dict)):
                raise TypeError("device, seq, ts, kind, data have the wrong types")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.invalid += 1
            if self.invalid <= 10 or self.invalid % 1000 == 0:
                log.warning("partition %d offset %d: not a telemetry event (%s); skipped (%d so far)",
                            self.partition, offset, exc, self.invalid)
            return None
        return Event(device, seq, ts, kind, data)

    @staticmethod
    def _with_step(vehicle: VehicleMonitor, event: Event) -> dict[str, Any]:
        """The GPS data with ``step_m``, the distance from the vehicle's previous fix, so a
        window's distance includes the step that crossed into it."""
        data = event.data
        previous, lat, lon = vehicle.position, data.get("lat"), data.get("lon")
        if (previous is None or data.get("mode") not in (2, 3) or not isinstance(lat, int | float)
                or not isinstance(lon, int | float)
                or (vehicle.last_ts is not None and event.ts < vehicle.last_ts)):
            return data
        return {**data, "step_m": haversine_m(previous[0], previous[1], lat, lon)}

    def _vehicle(self, device: str) -> VehicleMonitor:
        monitor = self._vehicles.get(device)
        if monitor is None:
            monitor = self._vehicles[device] = VehicleMonitor(device, self._config.rules.vehicle(device))
        return monitor

    def _patient(self, device: str) -> PatientMonitor:
        monitor = self._patients.get(device)
        if monitor is None:
            monitor = self._patients[device] = PatientMonitor(device, self._config.rules.patient(device))
        return monitor

    def _tick_to(self, out: list[OutRecord], now: int | None) -> None:
        if now is None:
            return
        boundary = now - now % self._tick_ms
        if self._last_tick is not None and boundary <= self._last_tick:
            return
        self._last_tick = boundary
        result = self._engine.advance(boundary)
        if result.results:
            self._states(out, result.results)
        dormant = self._dormant  # silent devices: skipped until their next event
        monitors: tuple[tuple[Mapping[str, VehicleMonitor | PatientMonitor], str], ...] = (
            (self._vehicles, "vehicle"), (self._patients, "patient"))
        for by_device, kind in monitors:
            for device, monitor in by_device.items():
                if device in dormant:
                    continue
                changes = monitor.tick(boundary)
                if changes:
                    self._alerts(out, changes, kind)
                if monitor.dormant():
                    dormant.add(device)

    def _alerts(self, out: list[OutRecord], changes: list[Alert], kind: str) -> None:
        for alert in changes:
            self.alerts += 1
            doc = alert.to_json()
            doc["device_kind"] = kind
            out.append(OutRecord("alerts", alert.fingerprint.encode(), orjson.dumps(doc), alert.ts))

    def _late(self, out: list[OutRecord], late: tuple[LateEvent, ...]) -> None:
        for event in late:
            self.late += 1
            out.append(OutRecord("late", event.key.encode(), orjson.dumps({
                "device": event.key, "seq": event.seq, "ts": event.ts, "data": event.event,
                "query": event.query, "watermark": event.watermark}), event.ts))

    def _states(self, out: list[OutRecord], results: tuple[WindowResult, ...]) -> None:
        for r in results:
            out.append(OutRecord("device_state", r.key.encode(),
                                 orjson.dumps(self._device_state(r)), r.end - 1))

    def _device_state(self, r: WindowResult) -> dict[str, Any]:
        v = r.values
        window: dict[str, Any] = {"start": r.start, "end": r.end, "count": v["count"]}
        vehicle, patient = self._vehicles.get(r.key), self._patients.get(r.key)
        if vehicle is not None:
            window.update(mean_speed=v["mean_speed"], max_speed=v["max_speed"],
                          distance_m=round(v["distance_m"], 1))
            return {"device": r.key, "kind": "vehicle", "ts": vehicle.last_ts,
                    "latest": vehicle.latest(), "news2": None, "window": window,
                    "alerts": sorted(a.fingerprint for a in vehicle.active())}
        if patient is not None:
            window.update(mean_heart_rate=v["mean_heart_rate"], min_spo2=v["min_spo2"])
            return {"device": r.key, "kind": "patient", "ts": patient.last_ts,
                    "latest": patient.latest(), "news2": patient.news2_json(), "window": window,
                    "alerts": sorted(a.fingerprint for a in patient.active())}
        return {"device": r.key, "kind": "other", "ts": None, "latest": {}, "news2": None,
                "window": window, "alerts": []}
