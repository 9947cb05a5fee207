"""Simulated vehicles: where they are, how fast they go, what their hardware shows.

A ``VehicleModel`` drives a route around a town centre (Königs Wusterhausen, next to
the A10 motorway of ../shared/testdata/vehicles) and is advanced with ``step(dt)``; all
its randomness comes from its own ``random.Random``, so a seed gives the same drive
every time. What it does, and what the rules downstream should notice:

* cruising at 85-100 % of each leg's speed limit (50 km/h in town, 70 on the ring,
  100 outside), accelerating at most 2 m/s², braking normally at 3 m/s²;
* speeding episodes: 135 % of the limit for 20-60 s;
* hard braking: 7 m/s² for 2-4 s;
* stops: delivery stops at some waypoints (30-120 s, ignition off, door open), plus
  traffic-light stops (10-40 s, engine idling);
* entering and leaving ``TOWN_CENTRE_ZONE``, a 1 km circle the cross-town routes go
  through and the ring route goes around;
* GPS fix loss (a tunnel, an urban canyon): 8-30 s without a fix;
* now and then, the panic button.

Scripted incidents (``edge.sim.incidents``; ``VehicleModel.create(..., incidents=...)``)
come on top: a ``speeding`` vehicle starts at the beginning of its route and, during
each episode, drives at ``SCRIPTED_SPEEDING`` times the limit the town enforces where
it is (``road_limit``: 50 km/h in the town centre, 100 km/h elsewhere, as ``vigil up``
configures the rules), skipping its stops; a ``town_edge`` vehicle drives
``TOWN_EDGE_ROUTE``, whose first leg cuts through the edge of the town centre, and waits
at the stop at its end until the incident's next cycle. During an incident (and for
``CALM_AFTER_S`` after a speeding one) a vehicle neither speeds nor brakes hard at
random.

``TrackModel`` instead follows a recorded track (``load_traffic``: the SUMO motorway
traffic in ../shared/testdata/vehicles/a10-ring.csv.gz) second by second.
"""

from __future__ import annotations

import csv
import gzip
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from edge.sim.incidents import Incident, active, next_cycle

__all__ = ["AREAS", "CALM_AFTER_S", "OPEN_ROAD_LIMIT_KMH", "ROUTES", "SCRIPTED_SPEEDING", "TOWN_CENTRE",
           "TOWN_CENTRE_LIMIT_KMH", "TOWN_CENTRE_ZONE", "TOWN_EDGE_ROUTE", "Area", "Leg", "Route", "TrackModel",
           "VehicleModel", "VehicleState", "distance_m", "load_traffic", "road_limit"]

TOWN_CENTRE = (52.2967, 13.6315)  # lat, lon
EARTH_M_PER_DEG = 111_320.0


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    lat: float
    lon: float
    radius_m: float

    def contains(self, lat: float, lon: float) -> bool:
        return distance_m(self.lat, self.lon, lat, lon) <= self.radius_m


TOWN_CENTRE_ZONE = Area("town-centre", TOWN_CENTRE[0], TOWN_CENTRE[1], 1000.0)
AREAS = (TOWN_CENTRE_ZONE, Area("depot", TOWN_CENTRE[0] - 0.0270, TOWN_CENTRE[1] - 0.0590, 150.0))
# the limits the town enforces (what `vigil up` writes for the rules): the legs' own limits are lower
TOWN_CENTRE_LIMIT_KMH = 50.0
OPEN_ROAD_LIMIT_KMH = 100.0
SCRIPTED_SPEEDING = 1.4  # a scripted speeding episode: this share of the enforced limit
CALM_AFTER_S = 60.0  # no random speeding or hard braking this long after a scripted episode


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(min(1.0, math.sqrt(a)))


def road_limit(lat: float, lon: float) -> float:
    """The speed limit the town enforces at a position, m/s."""
    return (TOWN_CENTRE_LIMIT_KMH if TOWN_CENTRE_ZONE.contains(lat, lon) else OPEN_ROAD_LIMIT_KMH) / 3.6


def _to_latlon(east: float, north: float) -> tuple[float, float]:
    lat = TOWN_CENTRE[0] + north / EARTH_M_PER_DEG
    lon = TOWN_CENTRE[1] + east / (EARTH_M_PER_DEG * math.cos(math.radians(TOWN_CENTRE[0])))
    return lat, lon


@dataclass(frozen=True, slots=True)
class Leg:
    end: tuple[float, float]  # metres east, north of the town centre
    limit_kmh: float
    stop: str = ""  # "" none, "light" (engine idles), "delivery" (ignition off, door open)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    start: tuple[float, float]
    legs: tuple[Leg, ...]  # the last leg ends at ``start``: routes are loops


def _ring(radius: float, n: int, limit: float) -> Route:
    pts = [(radius * math.sin(2 * math.pi * i / n), radius * math.cos(2 * math.pi * i / n)) for i in range(n)]
    legs = tuple(Leg(pts[(i + 1) % n], limit, "light" if i % 3 == 2 else "") for i in range(n))
    return Route("ring", pts[0], legs)


ROUTES: tuple[Route, ...] = (
    Route("west-east", (-5000.0, -300.0), (
        Leg((-1600.0, -300.0), 100),
        Leg((0.0, 0.0), 50, "light"),  # into the town centre
        Leg((1600.0, 200.0), 50),  # out of it
        Leg((5000.0, 200.0), 100, "delivery"),
        Leg((5000.0, -2000.0), 70),
        Leg((-5000.0, -2000.0), 100),
        Leg((-5000.0, -300.0), 70, "delivery"),
    )),
    _ring(2500.0, 12, 70),
    Route("north-south", (200.0, 6000.0), (
        Leg((200.0, 1500.0), 100),
        Leg((0.0, 0.0), 50, "delivery"),  # a stop in the centre
        Leg((-200.0, -1500.0), 50),
        Leg((-200.0, -6000.0), 100, "light"),
        Leg((2500.0, -6000.0), 70),
        Leg((2500.0, 6000.0), 100),
        Leg((200.0, 6000.0), 70, "delivery"),
    )),
    Route("depot-rounds", (-4000.0, -3000.0), (
        Leg((-1200.0, -600.0), 70),
        Leg((-400.0, 300.0), 50, "delivery"),
        Leg((600.0, -400.0), 50, "delivery"),
        Leg((300.0, 700.0), 30, "light"),
        Leg((-4000.0, -3000.0), 70, "delivery"),
    )),
)

# A courier round for the scripted ``town_edge`` incident (not one of ``ROUTES``): the
# first leg runs 960 m north of the centre, through the edge of the 1 km town-centre zone
# (in it for the 560 m between x = -280 and x = 280, about 45 s at 50 km/h); the rest
# stays outside it, back to a delivery stop 15 m outside the zone. A lap takes about 4.5
# minutes without its stop.
TOWN_EDGE_ROUTE = Route("town-edge", (-330.0, 960.0), (
    Leg((700.0, 960.0), 50),
    Leg((700.0, 1400.0), 70),
    Leg((-900.0, 1400.0), 70),
    Leg((-900.0, 960.0), 70),
    Leg((-330.0, 960.0), 50, "delivery"),
))


@dataclass(frozen=True, slots=True)
class VehicleState:
    lat: float
    lon: float
    speed: float  # m/s
    heading: float  # degrees true
    gps_fix: bool
    ignition: bool
    door_open: bool
    rpm: float
    panic: bool  # the panic button is held
    alt: float = 40.0


@dataclass(slots=True)
class _Episode:
    until: float = -1.0

    def active(self, t: float) -> bool:
        return t < self.until


def _rpm(speed: float, ignition: bool) -> float:
    if not ignition:
        return 0.0
    if speed < 0.5:
        return 780.0
    gear_top = (0, 4.5, 9.0, 14.0, 20.0, 27.0, 99.0)
    for gear in range(1, len(gear_top)):
        if speed <= gear_top[gear]:
            lo = gear_top[gear - 1]
            return round(1100.0 + 1900.0 * (speed - lo) / (gear_top[gear] - lo), 1)
    return 3000.0


@dataclass
class VehicleModel:
    """One vehicle on one route; ``t`` is simulated seconds since it started."""

    route: Route
    rng: random.Random
    t: float = 0.0
    leg: int = 0
    along: float = 0.0  # metres driven on the current leg
    speed: float = 0.0
    driver: float = 0.92  # share of the limit this driver cruises at
    ignition: bool = True
    door_open: bool = False
    stopped_until: float = -1.0
    speeding: _Episode = field(default_factory=_Episode)
    braking: _Episode = field(default_factory=_Episode)
    fix_lost: _Episode = field(default_factory=_Episode)
    panic: _Episode = field(default_factory=_Episode)
    log: list[tuple[float, str]] = field(default_factory=list)  # (t, what happened), for tests and demos
    incidents: tuple[Incident, ...] = ()  # scripted (edge.sim.incidents), on top of the random episodes
    calm_until: float = -1.0  # no random speeding or hard braking before
    _scripted_speeding: bool = False

    @classmethod
    def create(cls, index: int, seed: int, incidents: tuple[Incident, ...] = ()) -> VehicleModel:
        rng = random.Random(f"vehicle:{seed}:{index}")
        kinds = {i.kind for i in incidents}
        route = TOWN_EDGE_ROUTE if "town_edge" in kinds else ROUTES[index % len(ROUTES)]
        model = cls(route, rng, driver=rng.uniform(0.85, 1.0), incidents=incidents)
        # spread vehicles along their route; scripted ones start at its beginning
        model.leg = rng.randrange(len(route.legs))
        model.along = rng.uniform(0, 0.8) * model._leg_length()
        if kinds & {"speeding", "town_edge"}:
            model.leg, model.along = 0, 0.0
        model.speed = model._limit() * model.driver
        return model

    # -- geometry -------------------------------------------------------------------

    def _leg_ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        legs = self.route.legs
        start = self.route.start if self.leg == 0 else legs[self.leg - 1].end
        return start, legs[self.leg].end

    def _leg_length(self) -> float:
        (x0, y0), (x1, y1) = self._leg_ends()
        return math.hypot(x1 - x0, y1 - y0)

    def _limit(self) -> float:
        return self.route.legs[self.leg].limit_kmh / 3.6

    def position(self) -> tuple[float, float, float]:
        """(lat, lon, heading)"""
        (x0, y0), (x1, y1) = self._leg_ends()
        length = max(self._leg_length(), 1e-9)
        f = min(self.along / length, 1.0)
        lat, lon = _to_latlon(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
        heading = math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360.0
        return lat, lon, heading

    # -- behaviour ------------------------------------------------------------------

    def _event(self, what: str) -> None:
        self.log.append((round(self.t, 2), what))

    def step(self, dt: float) -> None:
        """Advance ``dt`` simulated seconds, in sub-steps of at most 0.25 s."""
        while dt > 1e-9:
            h = min(dt, 0.25)
            self._substep(h)
            dt -= h

    def _chance(self, per_second: float, h: float) -> bool:
        return self.rng.random() < per_second * h

    def _scripted(self, t: float) -> tuple[bool, bool]:
        """Whether a scripted speeding episode is under way (its start and end logged), and
        whether any scripted incident is."""
        under_way = [i.kind for i in self.incidents if active(i, t)]
        on = "speeding" in under_way
        if on and not self._scripted_speeding:
            self.speeding.until = self.braking.until = -1.0
            self.stopped_until = min(self.stopped_until, t)  # the driver cuts the stop short
            self._event("scripted: speeding")
        elif self._scripted_speeding and not on:
            self.calm_until = t + CALM_AFTER_S
            self._event("scripted: speeding over")
        self._scripted_speeding = on
        return on, bool(under_way)

    def _substep(self, h: float) -> None:
        t = self.t = self.t + h
        rng = self.rng
        scripted, any_incident = self._scripted(t) if self.incidents else (False, False)
        calm = any_incident or t < self.calm_until
        if t < self.stopped_until:
            self.speed = 0.0
            return
        if not self.ignition:
            self.ignition, self.door_open = True, False
            self._event("ignition on, door closed")
        limit = self._limit()
        # episodes start at random
        if not self.fix_lost.active(t) and self._chance(1 / 400, h):
            self.fix_lost.until = t + rng.uniform(8, 30)
            self._event("gps fix lost")
        if not self.panic.active(t) and self._chance(1 / 4000, h):
            self.panic.until = t + rng.uniform(1.0, 3.0)
            self._event("panic button")
        if (self.speed > 8 and not calm and not self.speeding.active(t) and not self.braking.active(t)
                and self._chance(1 / 240, h)):
            self.speeding.until = t + rng.uniform(20, 60)
            self._event("speeding")
        if self.speed > 10 and not calm and not self.braking.active(t) and self._chance(1 / 300, h):
            self.braking.until = t + rng.uniform(2, 4)
            self.speeding.until = -1
            self._event("hard braking")
        target = limit * (1.35 if self.speeding.active(t) else self.driver)
        remaining = self._leg_length() - self.along
        stop = self.route.legs[self.leg].stop
        if scripted:
            lat, lon, _ = self.position()
            target, stop = SCRIPTED_SPEEDING * road_limit(lat, lon), ""
        if stop and remaining <= self.speed ** 2 / (2 * 2.5) + 3:
            target = 0.0
        if self.braking.active(t):
            self.speed = max(0.0, self.speed - 7.0 * h)
        elif self.speed < target:
            self.speed = min(target, self.speed + 2.0 * h)
        else:
            self.speed = max(target, self.speed - (3.0 if target > 0 else 2.5) * h)
        if stop and target == 0.0 and self.speed < 0.3 and remaining < 8:
            self.speed = 0.0
            remaining = 0.0
        self.along += self.speed * h
        if self.along >= self._leg_length() or remaining <= 0.0:
            self.along = 0.0
            if stop == "delivery":
                self.stopped_until = t + rng.uniform(30, 120)
                for incident in self.incidents:
                    if incident.kind == "town_edge":  # off again at the next round
                        self.stopped_until = next_cycle(incident, t)
                self.ignition, self.door_open = False, True
                self._event("delivery stop: ignition off, door open")
            elif stop == "light":
                self.stopped_until = t + rng.uniform(10, 40)
                self._event("stopped at lights")
            self.leg = (self.leg + 1) % len(self.route.legs)

    def state(self) -> VehicleState:
        lat, lon, heading = self.position()
        return VehicleState(lat, lon, self.speed, heading, not self.fix_lost.active(self.t), self.ignition,
                            self.door_open, _rpm(self.speed, self.ignition), self.panic.active(self.t))


# ---- recorded traffic --------------------------------------------------------------


@dataclass
class TrackModel:
    """A vehicle replaying a recorded track: one (lat, lon, speed, heading) per second.
    Before its first and after its last row the vehicle is parked, ignition off."""

    name: str
    start: int  # the track's first second in the recording
    rows: list[tuple[float, float, float, float]]
    t: float = 0.0
    log: list[tuple[float, str]] = field(default_factory=list)

    def step(self, dt: float) -> None:
        self.t += dt

    def state(self) -> VehicleState:
        i = int(self.t) - self.start
        moving = 0 <= i < len(self.rows)
        lat, lon, speed, heading = self.rows[min(max(i, 0), len(self.rows) - 1)]
        if not moving:
            speed = 0.0
        return VehicleState(lat, lon, speed, heading, True, moving, False, _rpm(speed, moving), False)


def load_traffic(path: str | Path, limit: int | None = None) -> list[TrackModel]:
    """Tracks of a ``t,vehicle,lat,lon,speed,heading`` CSV (gzipped or not), longest first."""
    opener = gzip.open if str(path).endswith(".gz") else open
    tracks: dict[str, tuple[int, list[tuple[float, float, float, float]]]] = {}
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            _start, rows = tracks.setdefault(row["vehicle"], (int(row["t"]), []))
            rows.append((float(row["lat"]), float(row["lon"]), float(row["speed"]), float(row["heading"])))
    ordered = sorted(tracks.items(), key=lambda kv: (-len(kv[1][1]), kv[0]))
    return [TrackModel(name, start, rows) for name, (start, rows) in ordered[:limit]]
