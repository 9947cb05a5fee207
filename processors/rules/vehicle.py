"""The vehicle rules: one state machine per vehicle, fed with ``gps`` and ``obd`` events.

``VehicleMonitor(vehicle, rules).on_event(event)`` and ``.tick(now_ms)`` return alert
changes (``Alert``: fired, updated, resolved; see ``alerts``). No I/O and no clock of
its own. Speeds are m/s, distances metres, times the events' ``ts`` (ms).

GPS data (``edge.sensors.nmea.Fix.to_json``): ``mode`` (1 no fix, 2, 3), ``lat``,
``lon``, ``speed``, ``track``. OBD data (``edge.sensors.obd``): ``ignition``, ``speed``,
``rpm``. A GPS event without a fix (mode 1, or no position) carries no position and no
speed.

The rules, and where they follow Traccar (an open-source fleet tracking server) or not
====================================================================================

``overspeed``
    Speed above the limit for at least ``overspeed_duration_s`` (Traccar's
    ``event.overspeed.minimalDuration``). The limit is the lowest ``speed_limit`` of
    the zones the vehicle is in, else the vehicle's ``speed_limit``, else
    ``default_speed_limit`` (Traccar: a geofence's limit overrides the device's;
    ``preferLowest`` among geofences). Deviation: Traccar resets at once when the
    speed drops to the limit; here the alert resolves after ``overspeed_clear_s`` at
    or below it, so a speed hovering at the limit does not flap. Updated when the
    maximum speed grows by a whole m/s, or the limit changes.

``geofence:<zone>``
    Circles (haversine distance to the centre ≤ radius) and polygons (ray casting on
    lat/lon: fine for zones far smaller than a hemisphere and not across the
    antimeridian). Fired on entering (Traccar's ``geofenceEnter``), resolved on
    leaving (``geofenceExit``): one alert per stay. Like Traccar, only positions
    with a fix count; the first position inside a zone is an entry.

``harsh_acceleration`` / ``harsh_braking``
    Δspeed/Δt between consecutive speeds from the same source (GPS with GPS, OBD with
    OBD) at or beyond ``harsh_acceleration`` / ``harsh_braking`` m/s² (Traccar's
    ``event.behavior.accelerationThreshold`` / ``brakingThreshold``, off by default
    there). Deviations: samples more than ``harsh_max_gap_s`` apart are not compared
    (a gap says nothing about acceleration); and, against alarm fatigue, one
    alert per episode: repeats update it (``count``), and it resolves after
    ``harsh_quiet_s`` without another.

``idling`` (not in Traccar's core)
    Ignition on (OBD) and speed at or below ``motion_speed`` for ``idle_duration_s``;
    resolved by moving or switching off.

``fix_lost`` (not in Traccar's core, which flags invalid positions)
    GPS mode 1 for ``fix_lost_delay_s``; resolved by the next fix.

``offline``
    No event of any kind for ``offline_s`` (600 s) by the clock given to ``tick``
    (Traccar's status timeout plays this part); resolved by the next event.

``trip``
    Traccar's motion detection: moving means speed above ``motion_speed``. A trip
    starts (fired, backdated to the first moving sample) once moving lasted
    ``min_trip_duration_s`` or covered ``min_trip_distance_m``, and stops (resolved,
    with its distance and duration) once stopped for ``min_parking_s`` (Traccar's
    ``report.trip.minimalTripDuration``, ``minimalTripDistance``,
    ``minimalParkingDuration``; defaults here 300 s, 500 m, 300 s). Only continuous
    periods switch the state, as in Traccar. Deviations: Traccar's motion threshold
    is 0.01 knots; GPS jitter at a standstill reaches 0.3-0.7 m/s on the captures in
    ``testdata/nmea``, so the default here is 1.0 m/s. Traccar's ``useIgnition``
    (ignition off ends a trip) and ``minimalNoDataDuration`` (a gap in the data is a
    stop) are not implemented.

Checkpoints and the live view
============================

``snapshot()`` is the monitor's whole state as plain JSON data (no rules: they come
from the configuration at ``VehicleMonitor.restore(vehicle, rules, state)``, which
raises ``ValueError`` for a malformed snapshot). A restored monitor carries on
exactly as the one that was snapshotted would have. When the rules changed in
between, what the state says about a zone that is gone is dropped quietly: the
vehicle is no longer inside it, and its active ``geofence:<zone>`` alert (or any
alert of a rule this monitor no longer raises) is resolved, with the message
"<rule> is no longer configured", by the first ``on_event`` or ``tick`` after the
restore, so no alert stays active downstream with nothing left to end it. Changed
limits and delays apply from the restore on, to the timers already running.

``latest()`` is what the device-state topic shows of the vehicle now: the last
position with a fix, the last speed from either source, the last ignition state.

Per-window aggregates: ``TrackSummary`` (count, mean and max speed, haversine distance)
is an immutable reducer (``TrackSummary().add(...)``) for the window engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from edge.wire import Event
from processors.rules._snapshot import Fields, check_header, header
from processors.rules._values import finite_number as _number
from processors.rules._values import ms as _ms
from processors.rules.alerts import Alert, AlertBook, Sustained

__all__ = ["Circle", "Polygon", "TrackSummary", "VehicleMonitor", "VehicleRules", "Zone",
           "haversine_m", "summarize_track"]

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
_M_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180  # along a meridian, on the same sphere

_HARSH_RULES = ("harsh_acceleration", "harsh_braking")
_FIXED_RULES = ("overspeed", *_HARSH_RULES, "idling", "fix_lost", "offline", "trip")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points (spherical earth)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Circle:
    name: str
    lat: float
    lon: float
    radius_m: float
    speed_limit: float | None = None  # m/s

    def contains(self, lat: float, lon: float) -> bool:
        # A point more than the radius away in latitude alone is outside: most positions
        # are decided by this one subtraction, not the haversine.
        if abs(lat - self.lat) * _M_PER_DEG_LAT > self.radius_m * 1.001:
            return False
        return haversine_m(self.lat, self.lon, lat, lon) <= self.radius_m


@dataclass(frozen=True, slots=True)
class Polygon:
    name: str
    points: tuple[tuple[float, float], ...]  # (lat, lon) vertices, not closed
    speed_limit: float | None = None

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise ValueError(f"polygon {self.name!r} needs at least 3 points")

    def contains(self, lat: float, lon: float) -> bool:
        inside = False
        pts = self.points
        j = len(pts) - 1
        for i in range(len(pts)):
            (yi, xi), (yj, xj) = pts[i], pts[j]
            if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
                inside = not inside
            j = i
        return inside


Zone = Circle | Polygon


@dataclass(frozen=True, slots=True)
class VehicleRules:
    speed_limit: float | None = None  # the vehicle's own limit, m/s
    default_speed_limit: float = 120 / 3.6
    overspeed_duration_s: float = 10.0
    overspeed_clear_s: float = 5.0
    zones: tuple[Zone, ...] = ()
    harsh_acceleration: float = 3.0  # m/s² (about 0.3 g)
    harsh_braking: float = 4.0  # m/s² (about 0.4 g), a deceleration
    harsh_max_gap_s: float = 5.0
    harsh_quiet_s: float = 60.0
    motion_speed: float = 1.0  # m/s: above is moving, at or below is stopped
    idle_duration_s: float = 300.0
    fix_lost_delay_s: float = 5.0
    offline_s: float = 600.0
    min_trip_distance_m: float = 500.0
    min_trip_duration_s: float = 300.0
    min_parking_s: float = 300.0

    def __post_init__(self) -> None:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError("zone names must be unique")
        if self.harsh_acceleration <= 0 or self.harsh_braking <= 0:
            raise ValueError("harsh thresholds must be positive m/s²")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VehicleRules:
        """From a TOML table: the fields above by name, ``zones`` an array of tables
        ``{name, lat, lon, radius_m}`` (circle) or ``{name, points = [[lat, lon], ...]}``
        (polygon), each with an optional ``speed_limit``. Unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown vehicle rule setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: v for k, v in config.items() if k != "zones"}
        zones: list[Zone] = []
        for z in config.get("zones", ()):
            z = dict(z)
            limit = z.pop("speed_limit", None)
            if "points" in z:
                if set(z) != {"name", "points"}:
                    raise ValueError(f"a polygon zone has name and points, got {sorted(z)}")
                zones.append(Polygon(str(z["name"]), tuple((float(p[0]), float(p[1]))
                                                           for p in z["points"]), limit))
            else:
                if set(z) != {"name", "lat", "lon", "radius_m"}:
                    raise ValueError(f"a circle zone has name, lat, lon and radius_m, got {sorted(z)}")
                zones.append(Circle(str(z["name"]), float(z["lat"]), float(z["lon"]),
                                    float(z["radius_m"]), limit))
        return cls(**values, zones=tuple(zones))


@dataclass(frozen=True, slots=True)
class TrackSummary:
    """Mean and max speed and distance travelled over a window, as an immutable reducer."""

    count: int = 0  # samples with a speed
    speed_sum: float = 0.0
    max_speed: float | None = None
    distance_m: float = 0.0
    last_position: tuple[float, float] | None = None

    @property
    def mean_speed(self) -> float | None:
        return None if self.count == 0 else self.speed_sum / self.count

    def add(self, lat: float | None, lon: float | None, speed: float | None) -> TrackSummary:
        count, total, top = self.count, self.speed_sum, self.max_speed
        if speed is not None:
            count, total = count + 1, total + speed
            top = speed if top is None else max(top, speed)
        distance, last = self.distance_m, self.last_position
        if lat is not None and lon is not None:
            if last is not None:
                distance += haversine_m(last[0], last[1], lat, lon)
            last = (lat, lon)
        return TrackSummary(count, total, top, distance, last)


def summarize_track(samples: Iterable[tuple[float | None, float | None, float | None]]) -> TrackSummary:
    """(lat, lon, speed) samples in time order -> their ``TrackSummary``."""
    summary = TrackSummary()
    for lat, lon, speed in samples:
        summary = summary.add(lat, lon, speed)
    return summary


@dataclass(slots=True)
class _Trip:
    moving_since: int | None = None  # first moving sample of the candidate or trip
    stopped_since: int | None = None  # first stopped sample while on a trip
    distance_m: float = 0.0  # since moving_since
    on_trip: bool = False
    start: tuple[float, float] | None = None


@dataclass(slots=True)
class VehicleMonitor:
    vehicle: str
    rules: VehicleRules = field(default_factory=VehicleRules)
    seen: int | None = None  # when its newest event arrived, by the caller's clock
    last_ts: int | None = None  # newest event time seen, any kind
    stale: int = 0
    speed: float | None = None  # latest known speed, any source
    ignition: bool | None = None
    position: tuple[float, float] | None = None
    _book: AlertBook = field(default_factory=AlertBook)
    _overspeed: Sustained = field(default_factory=Sustained)
    _overspeed_max: float = 0.0
    _idle: Sustained = field(default_factory=Sustained)
    _fix: Sustained = field(default_factory=Sustained)
    _last_speed: dict[str, tuple[int, float]] = field(default_factory=dict)
    _harsh_last: dict[str, int] = field(default_factory=dict)
    _harsh_count: dict[str, int] = field(default_factory=dict)
    _inside: set[str] = field(default_factory=set)
    _trip: _Trip = field(default_factory=_Trip)
    _retired: list[str] = field(default_factory=list)  # rules gone: resolve their alerts

    def __post_init__(self) -> None:
        r = self.rules
        self._overspeed = Sustained(_ms(r.overspeed_duration_s), _ms(r.overspeed_clear_s))
        self._idle = Sustained(_ms(r.idle_duration_s), 0)
        self._fix = Sustained(_ms(r.fix_lost_delay_s), 0)

    def active(self) -> list[Alert]:
        return self._book.active()

    def latest(self) -> dict[str, Any]:
        """The vehicle now, for the device-state topic: ``lat``, ``lon`` (the last
        position with a fix), ``speed`` (m/s, the last from GPS or OBD), ``ignition``;
        each None while unknown."""
        position = self.position
        return {"lat": None if position is None else position[0],
                "lon": None if position is None else position[1],
                "speed": self.speed, "ignition": self.ignition}

    def on_event(self, event: Event, arrived: int | None = None) -> list[Alert]:
        """One event; ``arrived`` is when it reached the caller, on the clock later given
        to ``tick`` (default: its own time). Silence is counted from the later of the two,
        so a backlog of old events delivered now is not silence."""
        if event.kind not in ("gps", "obd"):
            return []
        ts = event.ts
        heard = ts if arrived is None or arrived < ts else arrived
        if self.seen is None or heard > self.seen:
            self.seen = heard
        if self.last_ts is not None and ts < self.last_ts:
            self.stale += 1
            return []
        self.last_ts = ts
        out: list[Alert] = []
        if self._retired:
            self._resolve_retired(out, ts)
        self._emit(out, self._book.end("offline", self.vehicle, ts, "reporting again"))
        data = event.data
        speed = _number(data.get("speed"))
        moved_to: tuple[float, float] | None = None
        if event.kind == "gps":
            mode = data.get("mode")
            lat, lon = _number(data.get("lat")), _number(data.get("lon"))
            has_fix = mode in (2, 3) and lat is not None and lon is not None
            self._fix_rule(out, ts, has_fix)
            if not has_fix:
                speed = None
            else:
                assert lat is not None and lon is not None
                moved_to = (lat, lon)
                self._geofence_rule(out, ts, lat, lon)
        else:
            ignition = data.get("ignition")
            if isinstance(ignition, bool):
                self.ignition = ignition
        if speed is not None:
            self.speed = speed
            self._harsh_rule(out, ts, event.kind, speed)
        self._harsh_quiet(out, ts)
        if speed is not None:
            self._overspeed_rule(out, ts, speed)
        self._idle_rule(out, ts)
        if speed is not None or moved_to is not None:
            self._trip_rule(out, ts, speed, moved_to)
        if moved_to is not None:
            self.position = moved_to
        return out

    def tick(self, now_ms: int) -> list[Alert]:
        """Wall-clock time passed: ``offline``, harsh episodes gone quiet, and delayed
        alarms (overspeed, idling, fix lost) whose delay ran out since the last reading
        (a device reports on change: a steady 140 km/h may be reported once)."""
        out: list[Alert] = []
        if self._retired:
            self._resolve_retired(out, now_ms)
        self._harsh_quiet(out, now_ms)
        heard = self.seen if self.seen is not None else self.last_ts
        if heard is not None and self.last_ts is not None and now_ms - heard < _ms(self.rules.offline_s):
            # the vehicle's own time: its last event plus the time since it arrived
            self._delays_due(out, self.last_ts + max(0, now_ms - heard))
        if heard is not None and now_ms - heard >= _ms(self.rules.offline_s):
            self._emit(out, self._book.hold(
                "offline", self.vehicle, now_ms, "major",
                f"no data for {self.rules.offline_s:g} s", {"last_ts": self.last_ts},
                started=heard))
        return out

    def dormant(self) -> bool:
        """Only its next event can change this monitor (it is offline, with nothing else
        pending): ``tick`` would return nothing until then, so a caller may skip it."""
        return (not self._retired and not self._harsh_last
                and self._book.get("offline", self.vehicle) is not None)

    def _delays_due(self, out: list[Alert], ts: int) -> None:
        """Pending delays fed again with the last readings, which still stand at ``ts``."""
        if self.last_ts is None or ts <= self.last_ts:
            return
        if self._overspeed.pending_since is not None and self.speed is not None:
            self._overspeed_rule(out, ts, self.speed)
        if self._idle.pending_since is not None:
            self._idle_rule(out, ts)
        if self._fix.pending_since is not None:
            self._fix_rule(out, ts, self._fix.active)  # pending towards lost: no fix since

    # ---- checkpoints -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON data, without the rules (see the module doc)."""
        trip = self._trip
        return {
            **header("vehicle", self.vehicle),
            "last_ts": self.last_ts,
            "seen": self.seen,
            "stale": self.stale,
            "speed": self.speed,
            "ignition": self.ignition,
            "position": None if self.position is None else list(self.position),
            "alerts": self._book.snapshot(),
            "overspeed": self._overspeed.snapshot(),
            "overspeed_max": self._overspeed_max,
            "idle": self._idle.snapshot(),
            "fix": self._fix.snapshot(),
            "last_speed": {source: [ts, speed] for source, (ts, speed) in self._last_speed.items()},
            "harsh_last": dict(self._harsh_last),
            "harsh_count": dict(self._harsh_count),
            "inside": sorted(self._inside),
            "trip": {"moving_since": trip.moving_since, "stopped_since": trip.stopped_since,
                     "distance_m": trip.distance_m, "on_trip": trip.on_trip,
                     "start": None if trip.start is None else list(trip.start)},
        }

    @classmethod
    def restore(cls, vehicle: str, rules: VehicleRules, state: Mapping[str, Any]) -> VehicleMonitor:
        """The monitor ``snapshot`` wrote, under ``rules`` (today's configuration);
        ``ValueError`` saying what is wrong if ``state`` is not such a snapshot."""
        f = check_header(state, "vehicle", vehicle)
        m = cls(vehicle, rules)
        m.last_ts = f.opt_integer("last_ts")
        m.seen = f.opt_integer("seen") if "seen" in state else m.last_ts
        m.stale = f.integer("stale")
        m.speed = f.opt_number("speed")
        m.ignition = f.opt_flag("ignition")
        m.position = f.point("position")
        m._book = AlertBook.restore(f.raw("alerts"), f"{f.where}: alerts")
        for alert in m._book.active():
            if alert.subject != vehicle:
                f.fail(f"alert {alert.fingerprint} is not about {vehicle!r}")
        r, where = rules, f.where
        m._overspeed = Sustained.restore(_ms(r.overspeed_duration_s), _ms(r.overspeed_clear_s),
                                         f.raw("overspeed"), f"{where}: overspeed")
        m._overspeed_max = f.number("overspeed_max")
        m._idle = Sustained.restore(_ms(r.idle_duration_s), 0, f.raw("idle"), f"{where}: idle")
        m._fix = Sustained.restore(_ms(r.fix_lost_delay_s), 0, f.raw("fix"), f"{where}: fix")
        for source, sample in f.mapping("last_speed").items():
            if source not in ("gps", "obd") or not isinstance(sample, list) or len(sample) != 2:
                f.fail(f"last_speed must map gps or obd to [ts, speed], got {source!r}: {sample!r}")
            pair = Fields({"ts": sample[0], "speed": sample[1]}, f"{where}: last_speed.{source}")
            m._last_speed[source] = (pair.integer("ts"), pair.number("speed"))
        for name, target in (("harsh_last", m._harsh_last), ("harsh_count", m._harsh_count)):
            counters = f.object(name)
            for rule in counters.names():
                if rule not in _HARSH_RULES:
                    counters.fail(f"unknown rule {rule!r}")
                target[rule] = counters.integer(rule)
        zones = {z.name for z in rules.zones}
        inside = f.items("inside")
        if not all(isinstance(name, str) for name in inside):
            f.fail("inside must be a list of zone names")
        m._inside = {name for name in inside if name in zones}  # zones gone: left quietly
        t = f.object("trip")
        m._trip = _Trip(t.opt_integer("moving_since"), t.opt_integer("stopped_since"),
                        t.number("distance_m"), t.flag("on_trip"), t.point("start"))
        if m._trip.on_trip and m._trip.moving_since is None:
            t.fail("a trip under way must have moving_since")
        t.done()
        f.done()
        raised = {*_FIXED_RULES, *(f"geofence:{name}" for name in zones)}
        m._retired = [a.rule for a in m._book.active() if a.rule not in raised]
        return m

    def _resolve_retired(self, out: list[Alert], ts: int) -> None:
        for rule in self._retired:
            self._emit(out, self._book.end(rule, self.vehicle, ts, f"{rule} is no longer configured"))
        self._retired = []

    # ---- the rules -------------------------------------------------------------------

    @staticmethod
    def _emit(out: list[Alert], alert: Alert | None) -> None:
        if alert is not None:
            out.append(alert)

    def _limit(self) -> float:
        zone_limits = [z.speed_limit for z in self.rules.zones
                       if z.speed_limit is not None and z.name in self._inside]
        if zone_limits:
            return min(zone_limits)
        if self.rules.speed_limit is not None:
            return self.rules.speed_limit
        return self.rules.default_speed_limit

    def _overspeed_rule(self, out: list[Alert], ts: int, speed: float) -> None:
        limit = self._limit()
        was = self._overspeed.active
        if self._overspeed.feed(ts, speed > limit, speed <= limit):
            self._overspeed_max = max(speed, self._overspeed_max) if was else speed
            since = self._overspeed.since if self._overspeed.since is not None else ts
            self._emit(out, self._book.hold(
                "overspeed", self.vehicle, ts, "major", f"speed above {limit:g} m/s",
                {"limit": limit, "max_speed": math.floor(self._overspeed_max)}, started=since))
        elif was:
            self._emit(out, self._book.end(
                "overspeed", self.vehicle, ts, f"speed back at or below {limit:g} m/s",
                {"max_speed": round(self._overspeed_max, 3)}))

    def _geofence_rule(self, out: list[Alert], ts: int, lat: float, lon: float) -> None:
        for zone in self.rules.zones:
            rule = f"geofence:{zone.name}"
            if zone.contains(lat, lon):
                if zone.name not in self._inside:
                    self._inside.add(zone.name)
                    self._emit(out, self._book.hold(rule, self.vehicle, ts, "info",
                                                    f"entered {zone.name}", {"zone": zone.name}))
            elif zone.name in self._inside:
                self._inside.discard(zone.name)
                self._emit(out, self._book.end(rule, self.vehicle, ts, f"left {zone.name}"))

    def _harsh_rule(self, out: list[Alert], ts: int, source: str, speed: float) -> None:
        previous = self._last_speed.get(source)
        self._last_speed[source] = (ts, speed)
        if previous is None:
            return
        dt = (ts - previous[0]) / 1000
        if dt <= 0 or dt > self.rules.harsh_max_gap_s:
            return
        accel = (speed - previous[1]) / dt
        if accel >= self.rules.harsh_acceleration:
            rule, what = "harsh_acceleration", "harsh acceleration"
        elif -accel >= self.rules.harsh_braking:
            rule, what = "harsh_braking", "harsh braking"
        else:
            return
        count = self._harsh_count.get(rule, 0) + 1
        self._harsh_count[rule] = count
        self._harsh_last[rule] = ts
        self._emit(out, self._book.hold(rule, self.vehicle, ts, "minor", what,
                                        {"count": count, "last_mps2": round(accel, 2)}))

    def _harsh_quiet(self, out: list[Alert], now: int) -> None:
        for rule, last in list(self._harsh_last.items()):
            if now - last >= _ms(self.rules.harsh_quiet_s):
                del self._harsh_last[rule]
                self._harsh_count.pop(rule, None)
                self._emit(out, self._book.end(rule, self.vehicle, now))

    def _idle_rule(self, out: list[Alert], ts: int) -> None:
        if self.ignition is None or self.speed is None:
            return
        stopped = self.speed <= self.rules.motion_speed
        if self._idle.feed(ts, self.ignition and stopped, not self.ignition or not stopped):
            since = self._idle.since if self._idle.since is not None else ts
            self._emit(out, self._book.hold(
                "idling", self.vehicle, ts, "info",
                f"engine on, not moving for {self.rules.idle_duration_s:g} s", started=since))
        else:
            self._emit(out, self._book.end("idling", self.vehicle, ts, "idling ended"))

    def _fix_rule(self, out: list[Alert], ts: int, has_fix: bool) -> None:
        if self._fix.feed(ts, not has_fix, has_fix):
            since = self._fix.since if self._fix.since is not None else ts
            self._emit(out, self._book.hold("fix_lost", self.vehicle, ts, "minor",
                                            "GPS fix lost", started=since))
        else:
            self._emit(out, self._book.end("fix_lost", self.vehicle, ts, "GPS fix back"))

    def _trip_rule(self, out: list[Alert], ts: int, speed: float | None,
                   moved_to: tuple[float, float] | None) -> None:
        trip, r = self._trip, self.rules
        if moved_to is not None and self.position is not None and trip.moving_since is not None:
            trip.distance_m += haversine_m(*self.position, *moved_to)
        if speed is None:
            return
        if speed > r.motion_speed:
            trip.stopped_since = None
            if trip.moving_since is None:
                trip.moving_since, trip.distance_m = ts, 0.0
                trip.start = moved_to or self.position
            if not trip.on_trip and (ts - trip.moving_since >= _ms(r.min_trip_duration_s)
                                     or trip.distance_m >= r.min_trip_distance_m):
                trip.on_trip = True
                self._emit(out, self._book.hold(
                    "trip", self.vehicle, ts, "info", "trip started",
                    {"start": list(trip.start) if trip.start else None},
                    started=trip.moving_since))
        elif not trip.on_trip:
            trip.moving_since = None  # a candidate that never became a trip
        else:
            if trip.stopped_since is None:
                trip.stopped_since = ts
            if ts - trip.stopped_since >= _ms(r.min_parking_s):
                assert trip.moving_since is not None
                self._emit(out, self._book.end(
                    "trip", self.vehicle, ts, "trip ended",
                    {"distance_m": round(trip.distance_m, 1),
                     "duration_s": (trip.stopped_since - trip.moving_since) / 1000,
                     "end": list(moved_to or self.position or ()) or None}))
                self._trip = _Trip()
