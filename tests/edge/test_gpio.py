"""GPIO sensors on gpiozero's MockFactory: buttons, door/ignition inputs, an MCP3008."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edge.sensors.gpio import (
    AdcSensor,
    ButtonSensor,
    Debouncer,
    DigitalInputSensor,
    make_adc,
    make_button,
    make_gpio,
)
from edge.sim.mcp3008 import SimulatedMCP3008


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    f = MockFactory()
    Device.pin_factory = f
    yield f
    f.reset()
    Device.pin_factory = previous


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_764_072_000.0)


# ---- the debouncer alone --------------------------------------------------------------


def test_debouncer_reports_a_level_once_it_has_held_for_the_bounce_time() -> None:
    d = Debouncer(0.05, False)
    for t, level in [(0.000, True), (0.002, False), (0.004, True)]:  # contact bounce
        d.edge(t, t, level)
    assert d.settle(0.030, 0.030) is None
    assert d.settle(0.060, 0.060) == (True, 0.004)  # stamped with the edge that stuck
    assert d.bounces == 1


def test_debouncer_drops_a_glitch_shorter_than_the_bounce_time() -> None:
    d = Debouncer(0.05, False)
    d.edge(0.0, 0.0, True)
    d.edge(0.01, 0.01, False)
    assert d.settle(1.0, 1.0, False) is None and d.bounces == 1


def test_debouncer_catches_a_change_whose_edge_was_missed() -> None:
    d = Debouncer(0.05, False)
    assert d.settle(0.0, 0.0, True) is None
    assert d.settle(0.1, 0.1, True) == (True, 0.0)


# ---- buttons -----------------------------------------------------------------------


def test_a_bouncy_press_is_one_press_and_one_release(factory: MockFactory, clock: FakeClock) -> None:
    button = ButtonSensor("panic", 17, pull_up=True, bounce_time=0.05, pin_factory=factory, clock=clock, wall=clock)
    button.open()
    pin = factory.pin(17)
    try:
        assert button.poll() == []
        for _ in range(3):  # pressed: the contact bounces to ground a few times
            pin.drive_low()
            clock.advance(0.002)
            pin.drive_high()
            clock.advance(0.002)
        pin.drive_low()
        pressed_at = clock.t
        clock.advance(0.1)
        readings = button.poll()
        clock.advance(1.4)
        pin.drive_high()
        clock.advance(0.1)
        readings += button.poll()
    finally:
        button.close()
    assert [r.data for r in readings] == [{"input": "panic", "event": "press"},
                                          {"input": "panic", "event": "release", "held_ms": 1500}]
    assert readings[0].kind == "button" and readings[0].ts == int(pressed_at * 1000)
    assert button.stats() == {"presses": 1, "bounces": 3}


def test_a_tap_shorter_than_the_bounce_time_is_not_a_press(factory: MockFactory, clock: FakeClock) -> None:
    button = ButtonSensor("nurse-call", 27, pin_factory=factory, clock=clock, wall=clock)
    button.open()
    try:
        factory.pin(27).drive_low()
        clock.advance(0.01)
        factory.pin(27).drive_high()
        clock.advance(1)
        assert button.poll() == []
    finally:
        button.close()


# ---- digital inputs ------------------------------------------------------------------


def test_a_door_reports_its_state_at_start_and_every_change(factory: MockFactory, clock: FakeClock) -> None:
    door = DigitalInputSensor("door", 22, active_label="open", inactive_label="closed", pin_factory=factory,
                              clock=clock, wall=clock)
    door.open()
    pin = factory.pin(22)
    try:
        first = door.poll()
        pin.drive_high()
        clock.advance(0.2)
        opened = door.poll()
        pin.drive_low()
        clock.advance(0.2)
        closed = door.poll()
    finally:
        door.close()
    assert [r.data["state"] for r in first + opened + closed] == ["closed", "open", "closed"]
    assert {r.kind for r in first + opened} == {"gpio"}
    assert opened[0].data == {"input": "door", "active": True, "state": "open"}


def test_a_door_open_at_start_is_reported_open_not_as_a_change(factory: MockFactory, clock: FakeClock) -> None:
    door = DigitalInputSensor("door", 22, active_label="open", inactive_label="closed", pin_factory=factory,
                              clock=clock, wall=clock)
    door.open()
    try:
        factory.pin(22).drive_high()  # the door was open when the agent started
        readings = door.poll()
        clock.advance(1)
        readings += door.poll()
    finally:
        door.close()
    assert [r.data["state"] for r in readings] == ["open"]


def test_an_ignition_line_with_a_pull_up_is_active_low(factory: MockFactory, clock: FakeClock) -> None:
    ignition = DigitalInputSensor("ignition", 23, pull_up=True, pin_factory=factory, clock=clock, wall=clock)
    ignition.open()
    try:
        assert [r.data["active"] for r in ignition.poll()] == [False]
        factory.pin(23).drive_low()
        clock.advance(0.1)
        assert [r.data["active"] for r in ignition.poll()] == [True]
    finally:
        ignition.close()


def test_options_name_the_bad_key() -> None:
    with pytest.raises(ValueError, match="pin"):
        make_button("b", {})
    with pytest.raises(ValueError, match="pull_up"):
        make_gpio("g", {"pin": 5, "pull_up": "yes"})
    with pytest.raises(ValueError, match="channel"):
        make_adc("a", {"channel": 9})


# ---- MCP3008 -----------------------------------------------------------------------


def test_adc_reads_a_simulated_mcp3008_over_mock_spi(factory: MockFactory, clock: FakeClock) -> None:
    chip = SimulatedMCP3008(factory)
    adc = AdcSensor("tank", channel=3, scale=100.0, unit="%", period=1.0, pin_factory=factory, clock=clock,
                    wall=clock)
    adc.open()
    try:
        chip.set_fraction(3, 0.25)
        chip.set_fraction(4, 0.9)  # another channel: must not leak into ours
        first = adc.poll()
        assert adc.poll() == []  # not before the period is up
        chip.set_fraction(3, 0.75)
        clock.advance(1.0)
        second = adc.poll()
    finally:
        adc.close()
        chip.close()
    assert first[0].kind == "adc"
    assert first[0].data == {"input": "tank", "value": pytest.approx(25.0, abs=0.1), "raw": 256, "unit": "%"}
    assert second[0].data["raw"] == 767 and second[0].data["value"] == pytest.approx(75.0, abs=0.1)
