"""The vitals line protocol (see edge/sensors/vitals.py) and its serial driver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge.sensors.vitals import (
    Vitals,
    VitalsDecoder,
    VitalsError,
    VitalsSensor,
    encode_vitals,
    parse_vitals_line,
)
from tests.edge.serial_pty import Pty, open_pty, poll_until


@pytest.fixture
def pty() -> Iterator[Pty]:
    with open_pty() as p:
        yield p

NORMAL = Vitals(heart_rate=72, spo2=97, resp_rate=16, temp_c=36.8, sys_bp=121, dia_bp=79,
                on_oxygen=False, consciousness="A")


def test_the_documented_example_line_parses() -> None:
    v = parse_vitals_line("VS,hr=72,spo2=97,rr=16,temp=36.8,sys=121,dia=79,o2=0,avpu=A*45\r\n")
    assert v == NORMAL
    assert v.to_json() == {"heart_rate": 72, "spo2": 97, "resp_rate": 16, "temp_c": 36.8, "sys_bp": 121,
                           "dia_bp": 79, "on_oxygen": False, "consciousness": "A", "probe_off": False}


def test_encode_and_parse_round_trip() -> None:
    sick = Vitals(128, 89, 27, 38.9, 92, 51, True, "V")
    assert parse_vitals_line(encode_vitals(sick)) == sick


def test_fields_come_in_any_order_and_unknown_keys_are_ignored() -> None:
    body = "VS,avpu=C,vendor=acme,rr=22,hr=101"
    x = 0
    for ch in body.encode():
        x ^= ch
    v = parse_vitals_line(f"{body}*{x:02X}")
    assert (v.consciousness, v.resp_rate, v.heart_rate, v.spo2) == ("C", 22, 101, None)


def test_probe_off_means_no_spo2_or_pulse_whatever_the_line_says() -> None:
    v = parse_vitals_line(encode_vitals(Vitals(80, 95, 18, 37.0, 120, 80, False, "A", probe_off=True)))
    assert v.probe_off and v.spo2 is None and v.heart_rate is None
    assert v.resp_rate == 18 and v.sys_bp == 120  # the other measurements still count


def test_empty_values_are_not_measured() -> None:
    v = parse_vitals_line(encode_vitals(Vitals(resp_rate=14)))
    assert v == Vitals(resp_rate=14)


@pytest.mark.parametrize(("line", "reason"), [
    ("VS,hr=72,spo2=97,rr=16,temp=36.8,sys=121,dia=79,o2=0,avpu=A*46", "bad_checksum"),
    ("VS,hr=72,spo2=97,rr=16,temp=36.8,sys=1", "malformed"),  # truncated
    ("\x00\xffgarbage", "noise"),
])
def test_bad_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(VitalsError) as err:
        parse_vitals_line(line)
    assert err.value.reason == reason


@pytest.mark.parametrize("field", ["hr=400", "spo2=101", "temp=52.0", "avpu=X", "o2=2", "rr=abc", "probe=maybe"])
def test_out_of_range_values_reject_the_whole_line(field: str) -> None:
    body = f"VS,{field}"
    x = 0
    for ch in body.encode():
        x ^= ch
    with pytest.raises(VitalsError) as err:
        parse_vitals_line(f"{body}*{x:02X}")
    assert err.value.reason == "malformed"


def test_decoder_skips_and_counts_bad_lines() -> None:
    d = VitalsDecoder()
    good = encode_vitals(NORMAL)
    stream = b"\xff\xfe\x00boot\r\n" + good[:20] + b"\r\n" + good.replace(b"hr=72", b"hr=73") + good
    out = d.feed(stream[:37]) + d.feed(stream[37:])
    assert out == [NORMAL]
    assert (d.counters["noise"], d.counters["malformed"], d.counters["bad_checksum"]) == (1, 1, 1)


def test_vitals_sensor_reads_a_monitor_through_a_pseudo_terminal(pty: Pty) -> None:
    sensor = VitalsSensor("monitor", pty.path, clock=lambda: 1764072000.5)
    sensor.open()
    try:
        pty.send(encode_vitals(NORMAL) + b"\x00\x13noise\r\n")
        pty.send(encode_vitals(Vitals(75, None, 17, 36.9, 119, 78, False, "A", probe_off=True)))
        readings = poll_until(sensor, lambda r: len(r) >= 2)
    finally:
        sensor.close()
    assert [r.kind for r in readings] == ["vitals", "vitals"]
    assert readings[0].data["spo2"] == 97 and readings[0].ts == 1764072000500
    assert readings[1].data["probe_off"] is True and readings[1].data["spo2"] is None
    assert sensor.stats()["bad_lines"] == 1
