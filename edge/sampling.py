"""Change-based reporting, per sensor: which readings become events. Pure; the clock is
passed in (seconds, monotonic).

For each kind of reading a sensor produces, the sampler remembers the last *reported*
reading and reports a new one when

- a field moved beyond its deadband (numbers: ``|new - reported| > deadband``; anything
  else, or a field that appears or disappears: any change) — but at most once every
  ``period_s``: a change inside the period is held and the newest held reading is
  reported when the period is over (``flush``), so the last word is never lost;
- or ``heartbeat_s`` passed since the last report and a reading came in since: the newest
  one is reported even without change, so the gateway sees the device is alive and the
  value still holds. A sensor that produces nothing produces no heartbeat: the agent
  never invents data (the gateway's no-data rules see the silence).

``period_s = 0`` with deadband 0 reports every reading that differs from the last one;
buttons and digital inputs default to that (a press is never sampled away). Fields a type
lists in ``ignore`` (a GPS fix's own ``time``) are carried but never count as change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.config import Deadband, SensorConfig, SensorOverride
from edge.sensors.base import Reading

__all__ = ["DEFAULTS", "Policy", "Sampler", "policy_for"]


@dataclass(frozen=True, slots=True)
class Policy:
    period_s: float = 1.0
    heartbeat_s: float = 60.0
    deadband: Deadband = 0.0
    ignore: frozenset[str] = frozenset()  # fields that change without meaning anything (a fix's time)

    def width(self, field_name: str) -> float:
        if isinstance(self.deadband, Mapping):
            return float(self.deadband.get(field_name, self.deadband.get("*", 0.0)))
        return float(self.deadband)


# Per sensor type (the drivers' types, see edge.sensors): defaults a [[sensors]] entry or
# the remote config may override. Field names are the drivers' reading fields.
DEFAULTS: dict[str, Policy] = {
    # ~5 m of latitude/longitude, 0.5 m/s, 10 degrees of heading, 10 m of altitude; a fix's
    # own time changes every fix and is not a change of position
    "gps": Policy(1.0, 60.0, {"lat": 5e-5, "lon": 5e-5, "speed": 0.5, "track": 10.0, "alt": 10.0},
                  frozenset({"time"})),
    # clinically small steps: 2 bpm, 1 % SpO2, 1 breath/min, 0.1 °C, 5 mmHg; flags exact
    "vitals": Policy(1.0, 30.0, {"heart_rate": 2.0, "spo2": 1.0, "resp_rate": 1.0, "temp_c": 0.1,
                                 "sys_bp": 5.0, "dia_bp": 5.0}),
    "obd": Policy(1.0, 30.0, {"speed": 0.5, "rpm": 100.0}),  # speed in m/s
    "gpio": Policy(0.0, 300.0, 0.0),  # every edge
    "button": Policy(0.0, 300.0, 0.0),  # every press and release
    "adc": Policy(1.0, 60.0, {"value": 0.01}, frozenset({"raw"})),  # in the sensor's unit
}
FALLBACK = Policy(1.0, 60.0, 0.0)


def policy_for(sensor: SensorConfig, override: SensorOverride | None = None) -> Policy:
    """The sensor's policy: the remote override, else its config, else its type's default."""
    base = DEFAULTS.get(sensor.type, FALLBACK)
    period = _first(override and override.period_s, sensor.period_s, base.period_s)
    heartbeat = _first(override and override.heartbeat_s, sensor.heartbeat_s, base.heartbeat_s)
    deadband = _first(override and override.deadband, sensor.deadband, base.deadband)
    return Policy(period, max(heartbeat, period), deadband, base.ignore)


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v is not False:
            return v
    return None


@dataclass(slots=True)
class _KindState:
    reported: dict[str, Any] | None = None
    reported_at: float = 0.0
    latest: Reading | None = None  # newest reading not reported
    changed: bool = False  # whether ``latest`` (or one before it) moved beyond the deadband


@dataclass(slots=True)
class Sampler:
    policy: Policy = field(default_factory=Policy)
    _kinds: dict[str, _KindState] = field(default_factory=dict)
    suppressed: int = 0  # readings not reported (they fell inside the deadband or a period)

    def offer(self, reading: Reading, now: float) -> list[Reading]:
        """Feed one reading; returns what to report now (zero or one reading)."""
        st = self._kinds.get(reading.kind)
        if st is None:
            st = self._kinds[reading.kind] = _KindState()
        if st.latest is not None:
            self.suppressed += 1  # the held one is superseded
        st.latest = reading
        if st.reported is None or self._moved(st.reported, reading.data):
            st.changed = True
        return self._due(st, now)

    def flush(self, now: float) -> list[Reading]:
        """Readings whose period has run out while held (call it every tick)."""
        out: list[Reading] = []
        for st in self._kinds.values():
            out += self._due(st, now)
        return out

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def _due(self, st: _KindState, now: float) -> list[Reading]:
        if st.latest is None:
            return []
        elapsed = now - st.reported_at
        first = st.reported is None
        if first or (st.changed and elapsed >= self.policy.period_s) or elapsed >= self.policy.heartbeat_s:
            reading = st.latest
            st.reported, st.reported_at = reading.data, now
            st.latest, st.changed = None, False
            return [reading]
        return []

    def _moved(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        if old.keys() != new.keys():
            return True
        for k, v in new.items():
            if k in self.policy.ignore:
                continue
            o = old[k]
            if _is_num(v) and _is_num(o):
                if abs(v - o) > self.policy.width(k) or (self.policy.width(k) == 0 and v != o):
                    return True
            elif v != o:
                return True
        return False


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
