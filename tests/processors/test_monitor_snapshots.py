"""Checkpoints of the rule monitors as JSON (snapshot, json.dumps, json.loads, restore)
and the live view of a device (latest, news2_json): a restored monitor carries on
exactly as one that never stopped, on random streams (hypothesis) and on a real GPS
capture; a rules change does not break a restore; a malformed snapshot is refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sensors.nmea import decode_capture
from edge.wire import Event
from processors.rules import (
    Alert,
    AlertState,
    Circle,
    PatientMonitor,
    PatientRules,
    Polygon,
    Threshold,
    VehicleMonitor,
    VehicleRules,
)

NMEA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "nmea"
if not NMEA.is_dir():
    NMEA = Path("/work/shared/testdata/nmea")

LAT0, LON0 = 52.0, 4.0
M_PER_DEG_LAT = 111_195.0

VEHICLE_RULES = VehicleRules(
    speed_limit=20.0, overspeed_duration_s=3, overspeed_clear_s=2,
    zones=(Circle("depot", LAT0, LON0, 300, speed_limit=10.0),
           Polygon("yard", ((LAT0, LON0 + 0.005), (LAT0, LON0 + 0.015),
                            (LAT0 + 0.01, LON0 + 0.015), (LAT0 + 0.01, LON0 + 0.005)))),
    harsh_quiet_s=10, idle_duration_s=5, fix_lost_delay_s=2, offline_s=15,
    min_trip_distance_m=200, min_trip_duration_s=10, min_parking_s=10)

PATIENT_RULES = PatientRules(
    news2_max_age_s=30, probe_off_delay_s=3, no_data_s=10,
    thresholds=(Threshold("spo2_low", "spo2", "below", 90, 92, delay_s=2, clear_delay_s=2),
                Threshold("heart_rate_high", "heart_rate", "above", 130, 120, delay_s=0,
                          clear_delay_s=3, severity="critical"),
                Threshold("temp_high", "temp_c", "above", 38.5, 38.0, delay_s=4, clear_delay_s=0,
                          severity="minor")))

NORMAL: dict[str, Any] = {"heart_rate": 72, "spo2": 97, "resp_rate": 16, "temp_c": 36.8,
                          "sys_bp": 121, "dia_bp": 79, "on_oxygen": False, "consciousness": "A",
                          "probe_off": False}

Monitor = VehicleMonitor | PatientMonitor
Op = tuple[str, int, dict[str, Any]]  # (kind or "tick", ms, data)


def through_json(monitor: Monitor) -> Any:
    """What a checkpoint topic gives back: the snapshot as strict JSON text, parsed."""
    return json.loads(json.dumps(monitor.snapshot(), allow_nan=False))


def restored(monitor: Monitor) -> Monitor:
    if isinstance(monitor, VehicleMonitor):
        return VehicleMonitor.restore(monitor.vehicle, monitor.rules, through_json(monitor))
    return PatientMonitor.restore(monitor.patient, monitor.rules, through_json(monitor))


def run(monitor: Monitor, ops: list[Op]) -> list[Alert]:
    out: list[Alert] = []
    for seq, (kind, t, data) in enumerate(ops):
        if kind == "tick":
            out += monitor.tick(t)
        else:
            device = monitor.vehicle if isinstance(monitor, VehicleMonitor) else monitor.patient
            out += monitor.on_event(Event(device, seq, t, kind, data))
    return out


def as_json(alerts: list[Alert]) -> list[dict[str, Any]]:
    return [a.to_json() for a in alerts]


def assert_cut_changes_nothing(make: Any, ops: list[Op], cut: int) -> None:
    steady = make()
    expected = run(steady, ops)
    first = make()
    before = run(first, ops[:cut])
    second = restored(first)
    after = run(second, ops[cut:])
    assert as_json(before + after) == as_json(expected)
    assert as_json(second.active()) == as_json(steady.active())
    assert second.latest() == steady.latest()
    if isinstance(second, PatientMonitor):
        assert isinstance(steady, PatientMonitor)
        assert second.news2_json() == steady.news2_json()
    assert second.snapshot() == steady.snapshot()


# ---- random streams ------------------------------------------------------------------

speeds = st.one_of(st.floats(0, 45, allow_nan=False), st.none(), st.just("fast"))


@st.composite
def vehicle_ops(draw: st.DrawFn) -> list[Op]:
    """GPS fixes (with and without a fix, in and out of the zones), OBD ignition and
    speed, wall-clock ticks; now and then an event from the past (a stepped clock)."""
    ops: list[Op] = []
    t = 0
    for _ in range(draw(st.integers(0, 80))):
        t += draw(st.integers(-1_500, 6_000))
        what = draw(st.sampled_from(["fix", "fix", "fix", "nofix", "obd", "tick"]))
        if what == "fix":
            north = draw(st.floats(-500, 1_500, allow_nan=False))
            east = draw(st.sampled_from([0.0, 0.01, 0.03]))
            ops.append(("gps", t, {"time": None, "mode": draw(st.sampled_from([2, 3])),
                                   "lat": LAT0 + north / M_PER_DEG_LAT, "lon": LON0 + east,
                                   "speed": draw(speeds), "track": 0.0}))
        elif what == "nofix":
            ops.append(("gps", t, {"time": None, "mode": 1, "lat": None, "lon": None,
                                   "speed": None, "track": None}))
        elif what == "obd":
            data: dict[str, Any] = {"rpm": 800.0}
            if draw(st.booleans()):
                data["ignition"] = draw(st.sampled_from([True, False, None]))
            if draw(st.booleans()):
                data["speed"] = draw(speeds)
            ops.append(("obd", t, data))
        else:
            ops.append(("tick", t + draw(st.integers(0, 20_000)), {}))
    return ops


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A vitals field: a value, null, or (``...``) missing from the line."""
    return st.one_of(value, value, st.none(), st.just(...))


@st.composite
def patient_ops(draw: st.DrawFn) -> list[Op]:
    """Vitals with random values (some impossible), fields null or missing, the probe
    off, wall-clock ticks; now and then an event from the past."""
    fields = {
        "heart_rate": maybe(st.integers(30, 160)),
        "spo2": maybe(st.one_of(st.integers(80, 100), st.floats(80, 100))),
        "resp_rate": maybe(st.integers(4, 30)),
        "temp_c": maybe(st.one_of(st.floats(34, 41), st.floats(34, 41), st.floats(34, 41),
                                  st.just(60.0))),  # 60: NEWS2 refuses it
        "sys_bp": maybe(st.integers(80, 230)),
        "dia_bp": maybe(st.integers(40, 120)),
        "on_oxygen": maybe(st.booleans()),
        "consciousness": maybe(st.sampled_from(["A", "A", "A", "V", "U", "X"])),
    }
    ops: list[Op] = []
    t = 0
    probe_off: Any = False  # stays off (or on) for a while
    for _ in range(draw(st.integers(0, 80))):
        t += draw(st.integers(-1_500, 5_000))
        if draw(st.integers(0, 5)) == 0:
            ops.append(("tick", t + draw(st.integers(0, 15_000)), {}))
            continue
        data = {k: draw(v) for k, v in fields.items()}
        if draw(st.integers(0, 4)) == 0:
            probe_off = draw(st.sampled_from([True, False, None, ...]))
        data["probe_off"] = probe_off
        ops.append(("vitals", t, {k: v for k, v in data.items() if v is not ...}))
    return ops


@settings(max_examples=300, deadline=None)
@given(ops=vehicle_ops(), cut=st.integers(0, 90))
def test_a_vehicle_restored_anywhere_carries_on_as_if_never_stopped(ops: list[Op], cut: int) -> None:
    assert_cut_changes_nothing(lambda: VehicleMonitor("truck-7", VEHICLE_RULES), ops, cut)


@settings(max_examples=300, deadline=None)
@given(ops=patient_ops(), cut=st.integers(0, 90))
def test_a_patient_restored_anywhere_carries_on_as_if_never_stopped(ops: list[Op], cut: int) -> None:
    assert_cut_changes_nothing(lambda: PatientMonitor("bed-3", PATIENT_RULES), ops, cut)


def test_the_random_streams_reach_the_rules() -> None:
    """The property tests above mean something only if their streams raise alerts:
    one fixed stream of each kind raises most rules, and keeps doing so across a cut."""
    ops: list[Op] = []
    for t in range(0, 60):  # at 25 m/s then stopped, through the depot and out
        ops.append(("gps", t * 1000, {"mode": 3, "lat": LAT0 + (t * 25 - 400) / M_PER_DEG_LAT,
                                      "lon": LON0, "speed": 25.0 if t < 40 else 0.0}))
    ops += [("gps", 61_000, {"mode": 1}), ("gps", 64_000, {"mode": 1}), ("tick", 90_000, {})]
    monitor = VehicleMonitor("truck-7", VEHICLE_RULES)
    rules = {a.rule for a in run(monitor, ops)}
    assert {"overspeed", "geofence:depot", "harsh_braking", "fix_lost", "offline", "trip"} <= rules
    for cut in range(0, len(ops), 7):
        assert_cut_changes_nothing(lambda: VehicleMonitor("truck-7", VEHICLE_RULES), ops, cut)

    vitals: list[Op] = [("vitals", t * 1000, {**NORMAL, "spo2": 85, "heart_rate": 135})
                        for t in range(10)]
    vitals += [("vitals", t * 1000, {**NORMAL, "probe_off": True, "spo2": None})
               for t in range(10, 15)]
    vitals += [("tick", 40_000, {})]
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    rules = {a.rule for a in run(bed, vitals)}
    assert {"threshold:spo2_low", "threshold:heart_rate_high", "news2", "probe_off",
            "no_data"} <= rules
    for cut in range(len(vitals)):
        assert_cut_changes_nothing(lambda: PatientMonitor("bed-3", PATIENT_RULES), vitals, cut)


# ---- a real capture ------------------------------------------------------------------

def test_a_real_gps_walk_cut_in_the_middle_gives_the_same_alerts() -> None:
    fixes, _ = decode_capture((NMEA / "haicom-305N.chk").read_text(errors="replace").splitlines())
    valid = [f for f in fixes if f.mode > 1]
    first = valid[0]
    assert first.lat is not None and first.lon is not None
    rules = VehicleRules(
        speed_limit=1.0, overspeed_duration_s=10, overspeed_clear_s=2,
        zones=(Circle("start", first.lat, first.lon, 20.0),),
        min_trip_distance_m=50, min_trip_duration_s=300, motion_speed=0.4)
    ops: list[Op] = [("gps", f.ts, f.to_json()) for f in fixes if f.ts is not None]
    steady = VehicleMonitor("gps-1", rules)
    expected = run(steady, ops)
    assert {a.rule for a in expected} >= {"overspeed", "geofence:start", "trip"}
    middle = len(ops) // 2
    monitor = VehicleMonitor("gps-1", rules)
    before = run(monitor, ops[:middle])
    # the cut falls while the walker is too fast, but not yet for long enough, and
    # while a trip may be starting: timers under way
    snapshot = monitor.snapshot()
    assert snapshot["overspeed"]["pending"] is not None
    assert snapshot["trip"]["moving_since"] is not None
    after = run(restored(monitor), ops[middle:])
    assert as_json(before + after) == as_json(expected)
    for cut in range(len(ops) + 1):  # and anywhere else
        assert_cut_changes_nothing(lambda: VehicleMonitor("gps-1", rules), ops, cut)


# ---- what a snapshot is --------------------------------------------------------------

def test_a_snapshot_is_plain_json_with_a_format_and_without_the_rules() -> None:
    truck = VehicleMonitor("truck-7", VEHICLE_RULES)
    run(truck, [("gps", 0, {"mode": 3, "lat": LAT0, "lon": LON0, "speed": 12.0}),
                ("obd", 1000, {"ignition": True, "speed": 11.0})])
    snapshot = truck.snapshot()
    assert json.loads(json.dumps(snapshot, allow_nan=False)) == snapshot
    assert orjson.loads(orjson.dumps(snapshot)) == snapshot  # what the processors write with
    assert (snapshot["format"], snapshot["kind"], snapshot["device"]) == (1, "vehicle", "truck-7")
    text = json.dumps(snapshot)
    assert "speed_limit" not in text and "yard" not in text  # rules come from the config
    assert "depot" in text  # ... but being inside a zone is state
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    run(bed, [("vitals", 0, NORMAL)])
    assert (bed.snapshot()["format"], bed.snapshot()["kind"]) == (1, "patient")
    assert json.loads(json.dumps(bed.snapshot(), allow_nan=False)) == bed.snapshot()


def test_an_alert_read_back_from_its_json_is_the_same_alert() -> None:
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    out = run(bed, [("vitals", t * 1000, {**NORMAL, "spo2": 85 - t, "consciousness": "V"})
                    for t in range(5)] + [("vitals", 5_000, NORMAL), ("tick", 60_000, {})])
    assert {a.state for a in out} == set(AlertState)
    assert [Alert.from_json(json.loads(json.dumps(a.to_json()))) for a in out] == out
    with pytest.raises(ValueError, match=r"malformed alert: revision is missing"):
        Alert.from_json({k: v for k, v in out[0].to_json().items() if k != "revision"})


def test_a_snapshot_survives_an_absurd_speed_that_overflows_the_acceleration() -> None:
    truck = VehicleMonitor("truck-7", VehicleRules())
    out = run(truck, [("gps", 0, {"mode": 3, "lat": LAT0, "lon": LON0, "speed": 1e308}),
                      ("gps", 1, {"mode": 3, "lat": LAT0, "lon": LON0, "speed": -1e308})])
    assert out[-1].rule == "harsh_braking" and out[-1].details["last_mps2"] == float("-inf")
    again = restored(truck)  # json.dumps(allow_nan=False) inside
    assert as_json(again.active()) == as_json(truck.active())


def test_a_restored_monitor_goes_on_with_the_snapshotted_episode() -> None:
    truck = VehicleMonitor("truck-7", VehicleRules(speed_limit=20.0, overspeed_duration_s=0))
    fired = truck.on_event(Event("truck-7", 1, 0, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                          "speed": 25.0}))
    again = restored(truck)
    assert again.active() == truck.active() == fired
    out = again.on_event(Event("truck-7", 2, 1000, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                           "speed": 27.5}))
    assert [(a.state, a.started, a.revision) for a in out] == [(AlertState.UPDATED, 0, 1)]


# ---- the rules changed between snapshot and restore ------------------------------------

def test_a_zone_gone_from_the_rules_is_left_and_its_alert_resolved() -> None:
    rules = VehicleRules(zones=(Circle("depot", LAT0, LON0, 300), Circle("old", LAT0, LON0, 500)))
    truck = VehicleMonitor("truck-7", rules)
    out = truck.on_event(Event("truck-7", 1, 0, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                        "speed": 0.0}))
    assert {a.rule for a in out} == {"geofence:depot", "geofence:old"}
    new_rules = VehicleRules(zones=(Circle("depot", LAT0, LON0, 300),
                                    Circle("new", LAT0, LON0, 400)))
    again = VehicleMonitor.restore("truck-7", new_rules, through_json(truck))
    out = again.tick(5_000)
    assert [(a.rule, a.state, a.message) for a in out] == [
        ("geofence:old", AlertState.RESOLVED, "geofence:old is no longer configured")]
    out = again.on_event(Event("truck-7", 2, 6_000, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                            "speed": 0.0}))
    assert [(a.rule, a.state) for a in out] == [("geofence:new", AlertState.FIRED)]
    assert sorted(a.rule for a in again.active()) == ["geofence:depot", "geofence:new"]
    # a second restore under the new rules finds nothing more to resolve
    assert VehicleMonitor.restore("truck-7", new_rules, through_json(again)).tick(7_000) == []


def test_an_alert_of_a_gone_zone_is_resolved_by_the_first_event_too() -> None:
    truck = VehicleMonitor("truck-7", VehicleRules(zones=(Circle("old", LAT0, LON0, 500),)))
    truck.on_event(Event("truck-7", 1, 0, "obd", {"ignition": True, "speed": 0.0}))
    truck.on_event(Event("truck-7", 2, 1_000, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                      "speed": 0.0}))
    again = VehicleMonitor.restore("truck-7", VehicleRules(), through_json(truck))
    out = again.on_event(Event("truck-7", 3, 2_000, "obd", {"ignition": True, "speed": 0.0}))
    assert [(a.rule, a.state, a.ts) for a in out] == [("geofence:old", AlertState.RESOLVED, 2_000)]
    assert again.active() == [] and again.latest()["lat"] == LAT0


def test_a_changed_limit_applies_to_the_episode_under_way() -> None:
    truck = VehicleMonitor("truck-7", VehicleRules(speed_limit=20.0, overspeed_duration_s=10))
    run(truck, [("gps", t * 1000, {"mode": 3, "lat": LAT0, "lon": LON0, "speed": 25.0})
                for t in range(5)])
    # the limit went up to 30 and the duration down to 3 s: 25 m/s is no longer too fast
    again = VehicleMonitor.restore("truck-7", VehicleRules(speed_limit=30.0, overspeed_duration_s=3),
                                   through_json(truck))
    assert run(again, [("gps", t * 1000, {"mode": 3, "lat": LAT0, "lon": LON0, "speed": 25.0})
                       for t in range(5, 20)]) == []
    # the duration went down to 3 s: the timer running since 0 s fires at the next fix
    again = VehicleMonitor.restore("truck-7", VehicleRules(speed_limit=20.0, overspeed_duration_s=3),
                                   through_json(truck))
    out = again.on_event(Event("truck-7", 9, 5_000, "gps", {"mode": 3, "lat": LAT0, "lon": LON0,
                                                            "speed": 25.0}))
    assert [(a.rule, a.state, a.started) for a in out] == [("overspeed", AlertState.FIRED, 0)]


def test_a_threshold_gone_or_changed_is_dropped_and_its_alert_resolved() -> None:
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    run(bed, [("vitals", t * 1000, {**NORMAL, "spo2": 85, "heart_rate": 135, "temp_c": 39.0})
              for t in range(10)])
    assert {a.rule for a in bed.active()} >= {"threshold:spo2_low", "threshold:heart_rate_high",
                                              "threshold:temp_high"}
    new_rules = PatientRules(
        news2_max_age_s=30, probe_off_delay_s=3, no_data_s=10,
        thresholds=(Threshold("spo2_low", "spo2", "below", 88, 90, delay_s=2, clear_delay_s=2),
                    Threshold("heart_rate_high", "resp_rate", "above", 25, 21, delay_s=5)))
    again = PatientMonitor.restore("bed-3", new_rules, through_json(bed))
    out = again.on_event(Event("bed-3", 11, 10_000, "vitals",
                               {**NORMAL, "spo2": 85, "heart_rate": 135, "temp_c": 39.0}))
    # temp_high is gone; heart_rate_high now watches the respiration rate: both resolved
    # spo2_low kept its episode (85 is below the new 88 too), updated to the new limits
    assert sorted((a.rule, a.state.value) for a in out if a.rule.startswith("threshold:")) == [
        ("threshold:heart_rate_high", "resolved"), ("threshold:spo2_low", "updated"),
        ("threshold:temp_high", "resolved")]
    spo2_low = next(a for a in out if a.rule == "threshold:spo2_low")
    assert (spo2_low.started, spo2_low.details["fire"]) == (0, 88)
    assert [a.rule for a in again.active() if a.rule.startswith("threshold:")] == ["threshold:spo2_low"]
    # the renewed heart_rate_high starts afresh on the respiration rate
    out = run(again, [("vitals", t * 1000, {**NORMAL, "resp_rate": 28}) for t in range(11, 17)])
    assert [(a.rule, a.state.value, a.started) for a in out if a.rule == "threshold:heart_rate_high"] \
        == [("threshold:heart_rate_high", "fired", 11_000)]


def test_a_patient_restored_under_new_rules_ticks_out_the_gone_alerts() -> None:
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    run(bed, [("vitals", t * 1000, {**NORMAL, "temp_c": 39.0}) for t in range(6)])
    again = PatientMonitor.restore("bed-3", PatientRules(), through_json(bed))
    out = again.tick(6_000)
    assert [(a.rule, a.state, a.revision) for a in out] == [
        ("threshold:temp_high", AlertState.RESOLVED, 1)]
    assert again.tick(7_000) == []


# ---- malformed snapshots ---------------------------------------------------------------

def _vehicle_snapshot() -> dict[str, Any]:
    truck = VehicleMonitor("truck-7", VEHICLE_RULES)
    run(truck, [("gps", t * 1000, {"mode": 3, "lat": LAT0 + t * 25 / M_PER_DEG_LAT, "lon": LON0,
                                   "speed": 25.0}) for t in range(10)])
    assert {a.rule for a in truck.active()} == {"geofence:depot", "overspeed", "trip"}
    return through_json(truck)  # type: ignore[no-any-return]


def _patient_snapshot() -> dict[str, Any]:
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    run(bed, [("vitals", t * 1000, {**NORMAL, "spo2": 85}) for t in range(8)])
    return through_json(bed)  # type: ignore[no-any-return]


def _set(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``state`` with ``path`` ("trip.distance_m", "alerts.0.state") set,
    or deleted when ``value`` is ``...``."""
    copy = json.loads(json.dumps(state))
    *parents, last = path.split(".")
    node = copy
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copy  # type: ignore[no-any-return]


@pytest.mark.parametrize(("path", "value", "message"), [
    ("format", 2, r"unknown format 2"),
    ("format", ..., r"format is missing"),
    ("kind", "patient", r"snapshot of a 'patient', not of a vehicle"),
    ("device", "truck-8", r"snapshot of 'truck-8', not of 'truck-7'"),
    ("last_ts", "yesterday", r"last_ts must be an integer, got 'yesterday'"),
    ("last_ts", 1.5, r"last_ts must be an integer"),
    ("speed", float("nan"), r"speed must be a finite number"),
    ("ignition", "on", r"ignition must be true or false"),
    ("position", [52.0], r"position must be a \[lat, lon\] pair"),
    ("trip.distance_m", "far", r"trip: distance_m must be a finite number, got 'far'"),
    ("trip.on_trip", ..., r"trip: on_trip is missing"),
    ("trip.moving_since", None, r"a trip under way must have moving_since"),
    ("trip.extra", 1, r"trip: unknown field\(s\) extra"),
    ("overspeed.active", 1, r"overspeed: active must be true or false"),
    ("alerts", {}, r"alerts: expected a list of alerts"),
    ("alerts.0.state", "resolved", r"a resolved alert is not active"),
    ("alerts.0.state", "burning", r"state must be fired, updated or resolved"),
    ("alerts.0.severity", "apocalyptic", r"severity must be one of"),
    ("alerts.0.fingerprint", "overspeed|truck-8", r"fingerprint 'overspeed\|truck-8' is not"),
    ("alerts.0.subject", "truck-8", r"fingerprint '[^']*\|truck-7' is not '[^']*\|truck-8'"),
    ("alerts.0.details", [], r"details must be a JSON object"),
    ("alerts.0.details", {"$float": "lots"}, r"\$float must be inf, -inf or nan"),
    ("last_speed", {"radar": [0, 1.0]}, r"last_speed must map gps or obd"),
    ("harsh_count", {"harsh_turning": 1}, r"harsh_count: unknown rule 'harsh_turning'"),
    ("inside", [1], r"inside must be a list of zone names"),
    ("surprise", 1, r"unknown field\(s\) surprise"),
])
def test_a_malformed_vehicle_snapshot_says_what_is_wrong(path: str, value: Any, message: str) -> None:
    state = _set(_vehicle_snapshot(), path, value)
    with pytest.raises(ValueError, match=r"malformed vehicle snapshot") as caught:
        VehicleMonitor.restore("truck-7", VEHICLE_RULES, state)
    assert caught.match(message)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("score.risk", "dire", r"risk must be one of"),
    ("score.scores", {"mood": 3}, r"scores must map NEWS2 parameters"),
    ("score.total", None, r"total must be an integer"),
    ("news2_values.consciousness", ["Z", 0], r"values NEWS2 cannot use"),
    ("news2_values.spo2", [200, 0], r"values NEWS2 cannot use"),
    ("news2_values.dia_bp", ["high", 0], r"dia_bp must be a finite number"),
    ("news2_values.mood", ["good", 0], r"mood must be a known vital sign"),
    ("thresholds.spo2_low.sustained", None, r"expected a JSON object, got None"),
    ("thresholds.spo2_low.worst", "low", r"worst must be a finite number"),
    ("measured.consciousness", "Z", r"unknown or impossible value consciousness='Z'"),
    ("measured.spo2", None, r"spo2 must be a finite number"),
    ("probe_off", None, r"probe_off must be true or false"),
    ("invalid", -0.5, r"invalid must be an integer"),
])
def test_a_malformed_patient_snapshot_says_what_is_wrong(path: str, value: Any, message: str) -> None:
    state = _set(_patient_snapshot(), path, value)
    with pytest.raises(ValueError, match=r"malformed patient snapshot") as caught:
        PatientMonitor.restore("bed-3", PATIENT_RULES, state)
    assert caught.match(message)


@pytest.mark.parametrize("state", [None, [], "{}", b"{}", 42])
def test_a_snapshot_that_is_not_an_object_is_refused(state: Any) -> None:
    with pytest.raises(ValueError, match=r"malformed vehicle snapshot: expected a JSON object"):
        VehicleMonitor.restore("truck-7", VEHICLE_RULES, state)
    with pytest.raises(ValueError, match=r"malformed patient snapshot: expected a JSON object"):
        PatientMonitor.restore("bed-3", PATIENT_RULES, state)


def test_a_pickle_is_not_a_snapshot() -> None:
    truck = VehicleMonitor("truck-7", VEHICLE_RULES)
    with pytest.raises(ValueError, match=r"malformed vehicle snapshot"):
        VehicleMonitor.restore("truck-7", VEHICLE_RULES, pickle.dumps(truck))  # type: ignore[arg-type]


def test_a_patient_snapshot_is_not_a_vehicle_snapshot() -> None:
    state = _patient_snapshot()
    with pytest.raises(ValueError, match=r"snapshot of a 'patient', not of a vehicle"):
        VehicleMonitor.restore("bed-3", VEHICLE_RULES, state)


# ---- the live view: latest() and news2_json() ----------------------------------------------

def test_vehicle_latest_position_speed_and_ignition() -> None:
    truck = VehicleMonitor("truck-7", VEHICLE_RULES)
    assert truck.latest() == {"lat": None, "lon": None, "speed": None, "ignition": None}
    run(truck, [("gps", 0, {"mode": 3, "lat": 52.1, "lon": 4.2, "speed": 12.5}),
                ("gps", 1_000, {"mode": 1, "lat": None, "lon": None, "speed": None})])
    assert truck.latest() == {"lat": 52.1, "lon": 4.2, "speed": 12.5, "ignition": None}
    run(truck, [("obd", 2_000, {"ignition": True, "speed": 3.0})])
    assert truck.latest() == {"lat": 52.1, "lon": 4.2, "speed": 3.0, "ignition": True}
    run(truck, [("obd", 1_500, {"ignition": False, "speed": 0.0})])  # from the past: ignored
    assert truck.latest()["ignition"] is True


def test_patient_latest_shows_every_value_measured_not_only_what_news2_took() -> None:
    bed = PatientMonitor("bed-3", PATIENT_RULES)
    assert bed.latest() == {"heart_rate": None, "spo2": None, "resp_rate": None, "temp_c": None,
                            "sys_bp": None, "dia_bp": None, "on_oxygen": None,
                            "consciousness": None, "probe_off": False}
    assert bed.news2_json() is None
    run(bed, [("vitals", 0, NORMAL)])
    assert bed.latest() == {**NORMAL, "heart_rate": 72.0}
    assert bed.news2_json() == {
        "total": 0, "risk": "low",
        "scores": {"resp_rate": 0, "spo2": 0, "air_or_oxygen": 0, "systolic_bp": 0, "pulse": 0,
                   "consciousness": 0, "temperature": 0}, "missing": []}
    # a temperature NEWS2 refuses is still what the device said; the blood pressure
    # measured once stays on show; an AVPU that is not one is not shown
    run(bed, [("vitals", 1_000, {"heart_rate": 80, "spo2": 95, "temp_c": 60.0,
                                 "consciousness": "X"})])
    assert bed.invalid == 1
    latest = bed.latest()
    assert (latest["temp_c"], latest["heart_rate"], latest["sys_bp"], latest["consciousness"]) \
        == (60.0, 80.0, 121, "A")
    news2 = bed.news2_json()
    assert news2 is not None and news2["scores"]["temperature"] == 0  # the old 36.8
    # the probe comes off: no saturation nor pulse to show, whatever the line says
    run(bed, [("vitals", 2_000, {**NORMAL, "probe_off": True, "spo2": 40})])
    latest = bed.latest()
    assert (latest["probe_off"], latest["spo2"], latest["heart_rate"]) == (True, None, None)
    run(bed, [("vitals", 3_000, {**NORMAL, "spo2": 93, "consciousness": "V",
                                 "on_oxygen": True})])
    latest = bed.latest()
    assert (latest["probe_off"], latest["spo2"], latest["consciousness"], latest["on_oxygen"]) \
        == (False, 93, "V", True)
    news2 = bed.news2_json()
    assert news2 is not None and (news2["total"], news2["risk"]) == (7, "high")
    assert json.loads(json.dumps(bed.latest(), allow_nan=False)) == bed.latest()
