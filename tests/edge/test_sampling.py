"""Change-based reporting: deadband, period and heartbeat, on an injected clock."""

from __future__ import annotations

from edge.config import SensorConfig, SensorOverride
from edge.sampling import Policy, Sampler, policy_for
from edge.sensors.base import Reading


def r(**data: object) -> Reading:
    return Reading("gps", dict(data), 0)


def test_first_reading_is_reported_then_only_moves_beyond_the_deadband() -> None:
    s = Sampler(Policy(period_s=0, heartbeat_s=60, deadband={"lat": 0.001, "*": 0.5}))
    assert s.offer(r(lat=52.0, speed=10.0), 0.0) == [r(lat=52.0, speed=10.0)]
    assert s.offer(r(lat=52.0009, speed=10.4), 1.0) == []  # inside both deadbands
    assert s.offer(r(lat=52.0011, speed=10.4), 2.0) == [r(lat=52.0011, speed=10.4)]  # lat moved
    assert s.offer(r(lat=52.0011, speed=10.9), 3.0) == []  # 0.5 from 10.4 is not beyond 0.5
    assert s.offer(r(lat=52.0011, speed=11.0), 4.0) == [r(lat=52.0011, speed=11.0)]


def test_deadband_is_measured_from_the_last_report_so_slow_drift_is_seen() -> None:
    s = Sampler(Policy(period_s=0, heartbeat_s=1000, deadband=1.0))
    reported = [x for t in range(10) for x in s.offer(r(temp=36.0 + 0.3 * t), float(t))]
    assert [round(x.data["temp"], 1) for x in reported] == [36.0, 37.2, 38.4]


def test_non_numeric_and_new_fields_count_as_change() -> None:
    s = Sampler(Policy(period_s=0, heartbeat_s=1000, deadband=100.0))
    s.offer(r(mode=3, fix="3d"), 0.0)
    assert s.offer(r(mode=3, fix="2d"), 1.0)
    assert s.offer(r(mode=3, fix="2d", probe="off"), 2.0)
    assert s.offer(Reading("gps", {"mode": True, "fix": "2d", "probe": "off"}, 0), 3.0)  # bool: exact


def test_period_holds_a_change_and_flush_reports_the_newest_when_it_ends() -> None:
    s = Sampler(Policy(period_s=5, heartbeat_s=60, deadband=0))
    assert s.offer(r(v=1), 0.0)
    assert s.offer(r(v=2), 1.0) == []
    assert s.offer(r(v=3), 2.0) == []
    assert s.flush(4.9) == []
    assert s.flush(5.0) == [r(v=3)]  # the last word is never lost
    assert s.flush(20.0) == []
    assert s.suppressed == 1  # v=2 was superseded


def test_a_change_that_reverts_within_the_period_is_still_reported() -> None:
    s = Sampler(Policy(period_s=5, heartbeat_s=60, deadband=0))
    s.offer(r(door="closed"), 0.0)
    s.offer(r(door="open"), 1.0)
    s.offer(r(door="closed"), 2.0)
    assert s.flush(5.0) == [r(door="closed")]  # something happened: the newest state goes out


def test_heartbeat_reports_an_unchanged_value_but_never_invents_one() -> None:
    s = Sampler(Policy(period_s=1, heartbeat_s=30, deadband=10))
    s.offer(r(v=1), 0.0)
    assert s.offer(r(v=1), 29.0) == []
    assert s.offer(r(v=1), 30.0) == [r(v=1)]
    assert s.flush(100.0) == []  # the sensor went quiet: nothing to report


def test_kinds_are_sampled_apart() -> None:
    s = Sampler(Policy(period_s=10, heartbeat_s=60, deadband=0))
    assert s.offer(Reading("gps", {"v": 1}, 0), 0.0)
    assert s.offer(Reading("obd", {"v": 1}, 0), 0.1)  # a first reading of its own kind


def test_policy_precedence_remote_then_file_then_type_default() -> None:
    gps = SensorConfig("gps", "gps", period_s=2.0)
    p = policy_for(gps)
    assert p.period_s == 2.0 and p.heartbeat_s == 60.0 and p.width("lat") == 5e-5
    p = policy_for(gps, SensorOverride(period_s=10.0, deadband=0.0))
    assert p.period_s == 10.0 and p.width("lat") == 0.0
    button = policy_for(SensorConfig("panic", "button"))
    assert button.period_s == 0.0 and button.width("event") == 0.0
    assert policy_for(SensorConfig("x", "gps", period_s=120.0)).heartbeat_s == 120.0  # never below period


def test_a_gps_fix_time_alone_is_not_a_change_but_a_lost_fix_is() -> None:
    s = Sampler(policy_for(SensorConfig("gps", "gps", period_s=0.0)))
    fix = {"time": "2026-11-25T12:00:00Z", "mode": 3, "lat": 52.0, "lon": 4.0, "speed": 0.0, "track": 0.0, "alt": 1.0}
    assert s.offer(Reading("gps", fix, 0), 0.0)
    assert s.offer(Reading("gps", {**fix, "time": "2026-11-25T12:00:01Z", "lat": 52.00001}, 0), 1.0) == []
    lost = {**fix, "time": "2026-11-25T12:00:02Z", "mode": 1, "lat": None, "lon": None}
    assert s.offer(Reading("gps", lost, 0), 2.0) == [Reading("gps", lost, 0)]
