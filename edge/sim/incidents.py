"""Scripted incidents: what the simulated town does on cue, so a demo shows alerts at once.

Left to chance, the simulators' speeding, zone crossings, deteriorations and probes
falling off take many minutes to show up. With ``vigil edge simulate --incidents``
(on by default under ``vigil up``) four devices follow a fixed schedule, in simulated
seconds from the start of the simulation, repeated every ``PERIOD_S`` (5 minutes) so a
demo left running keeps showing incidents:

* veh-001, ``speeding``, 15-55 s: 140 % of the limit where it is (100 km/h on the open
  road, 50 in the town centre), its stops skipped; ``overspeed`` fires, then resolves
  once it slows down.
* veh-002, ``town_edge``, the whole cycle: a courier round that cuts through the edge of
  the town centre, in the zone from about 5 s to about 50 s (``geofence:town-centre``
  fires, then resolves); back at its depot stop (ignition off, door open) before the
  cycle ends, off again at the next.
* bed-001, ``deteriorating``, 10-70 s: SpO2 down to ~86 % (below 90 from ~35 s),
  respiratory rate up to ~26/min, heart rate to ~110 (``news2``,
  ``threshold:spo2_low`` and ``threshold:resp_rate_high`` fire; the nurse puts oxygen
  on); then the patient recovers in ~30 s, comes off oxygen, and all resolve by ~110 s.
* bed-002, ``probe_off``, 20-50 s: the finger probe is off, the patient restless
  (``probe_off`` fires after 10 s, resolves when it is back on).

Devices the simulation does not have are skipped; every other device (and these ones,
outside their incidents) keeps its random behaviour. A vehicle replaying recorded
traffic follows its recording and ignores incidents.

This module is the schedule and the pure questions about it (``active``,
``episode_end``, ``next_cycle``); the models in ``edge.sim.vehicle`` and
``edge.sim.patient`` act on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["PERIOD_S", "SCHEDULE", "Incident", "IncidentKind", "active", "episode_end", "incidents_for",
           "next_cycle"]

PERIOD_S = 300.0

IncidentKind = Literal["speeding", "town_edge", "deteriorating", "probe_off"]


@dataclass(frozen=True, slots=True)
class Incident:
    """``device`` does ``kind`` from ``start`` for ``duration`` simulated seconds, again
    every ``every`` seconds."""

    device: str
    kind: IncidentKind
    start: float
    duration: float
    every: float = PERIOD_S

    def __post_init__(self) -> None:
        if self.start < 0 or self.duration <= 0 or self.every <= 0:
            raise ValueError(f"{self.device} {self.kind}: start must not be negative, duration and every "
                             "must be positive")
        if self.duration > self.every:
            raise ValueError(f"{self.device} {self.kind}: lasts {self.duration}s but repeats every {self.every}s")


SCHEDULE: tuple[Incident, ...] = (
    Incident("veh-001", "speeding", 15.0, 40.0),
    Incident("veh-002", "town_edge", 0.0, PERIOD_S),
    Incident("bed-001", "deteriorating", 10.0, 60.0),
    Incident("bed-002", "probe_off", 20.0, 30.0),
)


def incidents_for(device: str, schedule: tuple[Incident, ...] = SCHEDULE) -> tuple[Incident, ...]:
    """The incidents of one device (none for a device the schedule does not name)."""
    return tuple(i for i in schedule if i.device == device)


def active(incident: Incident, t: float) -> bool:
    """Whether ``incident`` is under way at ``t`` simulated seconds from the start."""
    return t >= incident.start and (t - incident.start) % incident.every < incident.duration


def episode_end(incident: Incident, t: float) -> float:
    """When the episode under way at ``t`` ends (``t`` itself if none is)."""
    if not active(incident, t):
        return t
    return t - (t - incident.start) % incident.every + incident.duration


def next_cycle(incident: Incident, t: float) -> float:
    """The first start of ``incident`` strictly after ``t``."""
    if t < incident.start:
        return incident.start
    return incident.start + (math.floor((t - incident.start) / incident.every) + 1) * incident.every
