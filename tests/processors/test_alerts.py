"""The alert model: one alert per condition (fired, updated, resolved) and the
delay-and-hysteresis primitive."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.rules.alerts import AlertBook, AlertState, Sustained


def test_a_condition_fires_once_updates_on_change_and_resolves_once() -> None:
    book = AlertBook()
    fired = book.hold("overspeed", "truck-7", 1000, "major", "speed above 15 m/s")
    assert fired is not None and fired.state is AlertState.FIRED
    assert fired.fingerprint == "overspeed|truck-7" and fired.revision == 0
    assert book.hold("overspeed", "truck-7", 2000, "major", "speed above 15 m/s") is None
    updated = book.hold("overspeed", "truck-7", 3000, "critical", "speed above 15 m/s")
    assert updated is not None and updated.state is AlertState.UPDATED
    assert updated.started == 1000 and updated.ts == 3000 and updated.revision == 1
    resolved = book.end("overspeed", "truck-7", 4000, details={"max": 18.2})
    assert resolved is not None and resolved.state is AlertState.RESOLVED
    assert resolved.fingerprint == fired.fingerprint and resolved.revision == 2
    assert resolved.details == {"max": 18.2}
    assert book.end("overspeed", "truck-7", 5000) is None
    assert book.active() == []


def test_fingerprints_are_per_rule_and_subject() -> None:
    book = AlertBook()
    a = book.hold("overspeed", "truck-7", 0, "major", "x")
    b = book.hold("overspeed", "truck-8", 0, "major", "x")
    c = book.hold("idling", "truck-7", 0, "info", "x")
    assert a and b and c
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    assert book.get("idling", "truck-7") == c


def test_a_delayed_alert_can_be_backdated_to_when_its_condition_began() -> None:
    book = AlertBook()
    alert = book.hold("threshold:spo2_low", "bed-3", 15_000, "major", "SpO2 low", started=0)
    assert alert is not None and alert.started == 0 and alert.ts == 15_000


def test_to_json_carries_the_fingerprint_and_state() -> None:
    alert = AlertBook().hold("news2", "bed-3", 5, "minor", "NEWS2 3", {"total": 3})
    assert alert is not None
    assert alert.to_json()["fingerprint"] == "news2|bed-3"
    assert alert.to_json()["state"] == "fired"


def feed(s: Sustained, samples: list[tuple[int, float]], below: float = 90,
         above: float = 92) -> list[bool]:
    return [s.feed(ts, v < below, v > above) for ts, v in samples]


def test_sustained_fires_only_after_the_delay() -> None:
    s = Sustained(on_delay_ms=15_000, off_delay_ms=15_000)
    assert feed(s, [(0, 88), (10_000, 88), (14_999, 89)]) == [False, False, False]
    assert s.feed(15_000, True, False) is True
    assert s.since == 0


def test_sustained_restarts_its_delay_when_the_trigger_lapses() -> None:
    s = Sustained(on_delay_ms=15_000, off_delay_ms=15_000)
    assert feed(s, [(0, 88), (10_000, 91), (12_000, 88), (26_000, 88), (27_000, 88)]) \
        == [False, False, False, False, True]


def test_sustained_holds_in_the_hysteresis_band_and_clears_after_the_off_delay() -> None:
    s = Sustained(on_delay_ms=0, off_delay_ms=15_000)
    assert feed(s, [(0, 85), (5_000, 91), (10_000, 92), (60_000, 91)]) == [True] * 4
    assert feed(s, [(61_000, 93), (70_000, 95), (75_999, 93)]) == [True, True, True]
    assert feed(s, [(76_000, 93)]) == [False]


def test_sustained_refuses_a_value_both_triggering_and_releasing() -> None:
    with pytest.raises(ValueError):
        Sustained().feed(0, True, True)


@given(st.integers(0, 20_000), st.lists(st.tuples(st.integers(0, 3_000), st.booleans()), max_size=60))
def test_sustained_without_a_band_equals_its_naive_definition(delay: int,
                                                              steps: list[tuple[int, bool]]) -> None:
    """Active at a sample iff the trigger held at every sample since the start of the
    current run of triggering samples, and that start is at least ``delay`` ago."""
    s = Sustained(on_delay_ms=delay, off_delay_ms=0)
    ts, run_start = 0, None
    for gap, trigger in steps:
        ts += gap
        run_start = (ts if run_start is None else run_start) if trigger else None
        expected = run_start is not None and ts - run_start >= delay
        assert s.feed(ts, trigger, not trigger) is expected
