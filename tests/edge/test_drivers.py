"""The built-in sensor types, as a device config names them."""

from __future__ import annotations

import pytest

import edge.sensors
from edge.config import SensorConfig
from edge.registry import SENSOR_TYPES
from edge.sensors.gpio import AdcSensor, ButtonSensor, DigitalInputSensor
from edge.sensors.gps import GpsSensor
from edge.sensors.obd import ObdSensor
from edge.sensors.vitals import VitalsSensor


def build(type_: str, **options: object) -> object:
    return SENSOR_TYPES[type_](SensorConfig(name=f"my-{type_}", type=type_, options=options))


def test_every_driver_is_registered_under_its_type() -> None:
    assert set(edge.sensors.DRIVER_FACTORIES) <= set(SENSOR_TYPES)
    gps = build("gps", port="/dev/ttyUSB0")
    assert isinstance(gps, GpsSensor) and gps.name == "my-gps" and gps.link.baudrate == 9600
    assert isinstance(build("vitals", port="/dev/ttyUSB1", baudrate=19200), VitalsSensor)
    obd = build("obd", port="/dev/rfcomm0", period=2)
    assert isinstance(obd, ObdSensor) and obd.link.baudrate == 38400 and obd.period == 2.0
    assert isinstance(build("button", pin=17), ButtonSensor)
    door = build("gpio", pin="GPIO22", active_label="open", inactive_label="closed")
    assert isinstance(door, DigitalInputSensor) and door.labels == ("closed", "open")
    adc = build("adc", channel=3, scale=100, unit="%")
    assert isinstance(adc, AdcSensor) and (adc.channel, adc.scale, adc.unit) == (3, 100.0, "%")


@pytest.mark.parametrize(("type_", "options", "key"), [
    ("gps", {}, "port"), ("vitals", {}, "port"), ("obd", {}, "port"),
    ("button", {}, "pin"), ("gpio", {"pin": 4, "pull_up": "no"}, "pull_up"),
    ("adc", {}, "channel"), ("adc", {"channel": 8}, "channel"),
])
def test_a_bad_option_is_refused_by_name(type_: str, options: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        build(type_, **options)


def test_make_sensor_names_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown sensor type 'lidar'"):
        edge.sensors.make_sensor("lidar", "x", {})


@pytest.mark.parametrize(("type_", "options", "message"), [
    ("gps", {"port": "/dev/ttyS0", "baudrate": "fast"}, "baudrate: expected an integer, got 'fast'"),
    ("obd", {"port": "/dev/ttyS0", "period": 0}, "period: expected a positive number"),
    ("gpio", {"pin": 4, "active_label": 1}, "active_label: expected a string"),
    ("adc", {"channel": 1, "spi_device": 2}, "spi_device: expected 0..1"),
])
def test_option_errors_say_what_was_expected(type_: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(type_, **options)
