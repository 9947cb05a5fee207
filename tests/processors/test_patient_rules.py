"""Patient rules: NEWS2 risk alerts, threshold alarms with delay and hysteresis, and the
technical alarms (probe off, no data), on a driven clock."""

from __future__ import annotations

from typing import Any

import pytest

from edge.wire import Event
from processors.rules.alerts import Alert, AlertState
from processors.rules.patient import PatientMonitor, PatientRules, Threshold

NORMAL: dict[str, Any] = {"heart_rate": 72, "spo2": 97, "resp_rate": 16, "temp_c": 36.8,
                          "sys_bp": 121, "dia_bp": 79, "on_oxygen": False, "consciousness": "A",
                          "probe_off": False}


class Bed:
    """A patient monitor fed second by second."""

    def __init__(self, rules: PatientRules | None = None) -> None:
        self.monitor = PatientMonitor("bed-3", rules or PatientRules())
        self.seq = 0

    def vitals(self, t_s: float, **changes: Any) -> list[Alert]:
        self.seq += 1
        return self.monitor.on_event(
            Event("bed-3", self.seq, int(t_s * 1000), "vitals", {**NORMAL, **changes}))

    def run(self, start_s: int, stop_s: int, **changes: Any) -> list[Alert]:
        out: list[Alert] = []
        for t in range(start_s, stop_s):
            out += self.vitals(t, **changes)
        return out


def changes(alerts: list[Alert], rule: str) -> list[tuple[str, int]]:
    return [(a.state.value, a.ts // 1000) for a in alerts if a.rule == rule]


def test_normal_vitals_raise_nothing() -> None:
    bed = Bed()
    assert bed.run(0, 120) == []
    assert bed.monitor.score is not None and bed.monitor.score.total == 0


def test_spo2_below_90_fires_after_15_s_and_resolves_only_above_92_for_15_s() -> None:
    bed = Bed()
    out = bed.run(0, 10)
    out += bed.run(10, 40, spo2=88)  # low from t=10: fires at t=25
    out += bed.run(40, 80, spo2=91)  # hysteresis band: stays
    out += bed.run(80, 100, spo2=93)  # above 92 from t=80: resolves at t=95
    assert changes(out, "threshold:spo2_low") == [("fired", 25), ("resolved", 95)]
    fired = next(a for a in out if a.rule == "threshold:spo2_low")
    assert fired.started == 10_000 and fired.severity == "major"
    assert fired.fingerprint == "threshold:spo2_low|bed-3"


def test_a_brief_desaturation_is_not_an_alarm() -> None:
    bed = Bed()
    out = bed.run(0, 14, spo2=85) + bed.run(14, 60, spo2=96)
    assert changes(out, "threshold:spo2_low") == []


def test_a_threshold_alarm_is_updated_when_the_value_gets_worse() -> None:
    bed = Bed()
    out = bed.run(0, 20, spo2=88) + bed.run(20, 25, spo2=84) + bed.run(25, 30, spo2=86)
    assert changes(out, "threshold:spo2_low") == [("fired", 15), ("updated", 20)]
    assert [a.details["worst"] for a in out if a.rule == "threshold:spo2_low"] == [88, 84]


def test_unknown_values_neither_fire_nor_clear_a_threshold_alarm() -> None:
    bed = Bed()
    out = bed.run(0, 10, spo2=85) + bed.run(10, 30, spo2=None) + bed.run(30, 44, spo2=85)
    assert changes(out, "threshold:spo2_low") == []  # the delay restarted at t=30
    out = bed.run(44, 46, spo2=85) + bed.run(46, 100, spo2=None)
    assert changes(out, "threshold:spo2_low") == [("fired", 45)]  # held while unknown


def test_heart_rate_high_with_hysteresis() -> None:
    bed = Bed()
    out = bed.run(0, 20, heart_rate=135) + bed.run(20, 60, heart_rate=125) \
        + bed.run(60, 80, heart_rate=110)
    assert changes(out, "threshold:heart_rate_high") == [("fired", 15), ("resolved", 75)]


def test_configurable_thresholds_and_delays() -> None:
    rules = PatientRules(thresholds=(
        Threshold("temp_high", "temp_c", "above", 38.5, 38.0, delay_s=0, clear_delay_s=5,
                  severity="minor"),))
    bed = Bed(rules)
    out = bed.run(0, 3, temp_c=38.6) + bed.run(3, 12, temp_c=37.5)
    assert changes(out, "threshold:temp_high") == [("fired", 0), ("resolved", 8)]


def test_threshold_limits_must_leave_a_hysteresis_band_the_right_way() -> None:
    with pytest.raises(ValueError):
        Threshold("x", "spo2", "below", 90, 85)
    with pytest.raises(ValueError):
        Threshold("x", "heart_rate", "above", 130, 140)
    with pytest.raises(ValueError):
        PatientRules(spo2_scale=3)


def test_news2_fires_on_a_single_3_updates_as_the_risk_climbs_and_resolves() -> None:
    bed = Bed()
    out = bed.vitals(0)
    out += bed.vitals(1, consciousness="V")  # a single 3: low-medium
    out += bed.vitals(2, consciousness="V")  # unchanged: nothing
    out += bed.vitals(3, consciousness="V", resp_rate=22, heart_rate=95)  # 3+2+1 = 6: medium
    out += bed.vitals(4, consciousness="V", resp_rate=26, heart_rate=95)  # 3+3+1 = 7: high
    out += bed.vitals(5)  # back to 0
    news = [a for a in out if a.rule == "news2"]
    assert [(a.state, a.details.get("risk"), a.severity) for a in news] == [
        (AlertState.FIRED, "low-medium", "minor"),
        (AlertState.UPDATED, "medium", "major"),
        (AlertState.UPDATED, "high", "critical"),
        (AlertState.RESOLVED, "low", "critical"),
    ]
    assert len({a.fingerprint for a in news}) == 1
    assert news[-1].details["total"] == 0


def test_news2_low_scores_raise_nothing_by_default() -> None:
    bed = Bed()
    assert [a for a in bed.vitals(0, heart_rate=95, resp_rate=22) if a.rule == "news2"] == []
    assert bed.monitor.score is not None and bed.monitor.score.total == 3


def test_news2_uses_the_latest_value_of_each_parameter_within_its_window() -> None:
    bed = Bed(PatientRules(news2_max_age_s=600))
    bed.vitals(0, sys_bp=85)  # 3: low-medium
    out = bed.vitals(300, sys_bp=None)  # the 85 still counts
    assert bed.monitor.score is not None and bed.monitor.score.scores["systolic_bp"] == 3
    out = bed.vitals(601, sys_bp=None)  # too old: missing now
    assert bed.monitor.score.missing == ("systolic_bp",)
    assert changes(out, "news2") == [("resolved", 601)]


def test_news2_scale_2_patients() -> None:
    bed = Bed(PatientRules(spo2_scale=2))
    assert bed.vitals(0, spo2=89) == []  # in the 88-92 target: 0
    out = bed.vitals(1, spo2=98, on_oxygen=True)  # 3 (spo2) + 2 (oxygen) = 5: medium
    assert [(a.details["risk"], a.details["total"]) for a in out if a.rule == "news2"] \
        == [("medium", 5)]


def test_impossible_values_are_counted_and_do_not_disturb_news2() -> None:
    bed = Bed()
    bed.vitals(0, consciousness="P")
    assert bed.vitals(1, temp_c=60.0, consciousness="P") == []
    assert bed.monitor.invalid == 1
    assert bed.monitor.score is not None and bed.monitor.score.scores["temperature"] == 0


def test_probe_off_fires_after_10_s_and_resolves_when_back_on() -> None:
    bed = Bed()
    out = bed.run(0, 5) + bed.run(5, 30, probe_off=True, spo2=None, heart_rate=None) \
        + bed.run(30, 32)
    assert changes(out, "probe_off") == [("fired", 15), ("resolved", 30)]
    assert changes(out, "threshold:spo2_low") == []


def test_probe_off_masks_the_probe_values_whatever_the_line_says() -> None:
    bed = Bed()
    out = bed.run(0, 30, probe_off=True, spo2=50, heart_rate=20)
    assert changes(out, "threshold:spo2_low") == []
    assert changes(out, "threshold:heart_rate_low") == []


def test_no_data_fires_on_the_clock_and_resolves_with_the_next_event() -> None:
    bed = Bed()
    assert bed.monitor.tick(1_000_000) == []  # never heard from: nothing
    bed.vitals(0)
    assert bed.monitor.tick(59_999) == []
    fired = bed.monitor.tick(60_000)
    assert [(a.rule, a.state) for a in fired] == [("no_data", AlertState.FIRED)]
    assert fired[0].started == 0
    assert bed.monitor.tick(90_000) == []  # one alert, not one per tick
    out = bed.vitals(95)
    assert changes(out, "no_data") == [("resolved", 95)]


def test_an_event_older_than_the_newest_is_ignored() -> None:
    bed = Bed()
    bed.vitals(10)
    assert bed.vitals(5, consciousness="U") == []
    assert bed.monitor.stale == 1


def test_other_kinds_are_not_vitals() -> None:
    bed = Bed()
    assert bed.monitor.on_event(Event("bed-3", 1, 0, "gps", {"mode": 1})) == []
    assert bed.monitor.last_ts is None


def test_a_monitor_pickled_mid_stream_carries_on_exactly_as_the_original() -> None:
    import pickle

    a, b = Bed(), Bed()
    assert a.run(0, 10, spo2=85) == b.run(0, 10, spo2=85)
    b.monitor = pickle.loads(pickle.dumps(b.monitor))
    assert a.run(10, 40, spo2=85, consciousness="V") == b.run(10, 40, spo2=85, consciousness="V")
    assert a.monitor.tick(200_000) == b.monitor.tick(200_000)


def test_rules_from_a_toml_table() -> None:
    import tomllib

    rules = PatientRules.from_config(tomllib.loads("""
        spo2_scale = 2
        no_data_s = 30
        [[thresholds]]
        name = "spo2_low"
        parameter = "spo2"
        direction = "below"
        fire = 85
        clear = 88
        delay_s = 10
    """))
    assert rules.spo2_scale == 2 and rules.no_data_s == 30
    assert rules.thresholds == (Threshold("spo2_low", "spo2", "below", 85, 88, delay_s=10),)
    assert PatientRules.from_config({}) == PatientRules()
    for bad in ({"no_dta_s": 3}, {"thresholds": [{"name": "x", "parameter": "spo2",
                                                  "direction": "under", "fire": 1, "clear": 2}]},
                {"thresholds": [{"name": "x", "parameter": "spo2", "direction": "below",
                                 "fire": 1, "clear": 2, "delay": 3}]}):
        with pytest.raises(ValueError):
            PatientRules.from_config(bad)


def test_a_low_spo2_reported_once_fires_when_its_delay_runs_out() -> None:
    """The agent reports a vital sign when it changes: SpO2 88 % once, then silence (the
    value stands). The 15 s delay runs out on the clock, not at the next reading."""
    bed = Bed()
    bed.vitals(0, spo2=88)
    ticks = [a for t in range(1, 20) for a in bed.monitor.tick(t * 1000)]
    assert changes(ticks, "threshold:spo2_low") == [("fired", 15)]
    assert next(a for a in ticks if a.rule == "threshold:spo2_low").started == 0


def test_a_probe_off_reported_once_fires_when_its_delay_runs_out() -> None:
    bed = Bed()
    bed.vitals(0)
    bed.vitals(1, probe_off=True, spo2=None, heart_rate=None)
    ticks = [a for t in range(2, 14) for a in bed.monitor.tick(t * 1000)]
    assert changes(ticks, "probe_off") == [("fired", 11)]
    assert not [a for a in ticks if a.rule.startswith("threshold:")]
