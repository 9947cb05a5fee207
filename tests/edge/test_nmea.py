"""The NMEA parser and fix tracker, against six real receivers as gpsd decoded them.

Each capture in ../shared/testdata/nmea/ interleaves what a receiver sent (``$`` lines)
with gpsd's TPV reports (``{`` lines), the oracle. gpsd may report one epoch several
times as sentences arrive (and its first reports of an epoch carry a speed it derives
from successive positions); its last report for a time is its final word on that epoch,
so that is what we compare with our one fix per epoch.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import tty
from datetime import date
from pathlib import Path

import pytest

from edge.sensors.gps import GpsSensor
from edge.sensors.nmea import (
    GGA,
    RMC,
    VTG,
    Fix,
    NmeaDecoder,
    NmeaError,
    decode,
    decode_capture,
    parse_sentence,
    with_checksum,
)

CAPTURES = Path("/work/shared/testdata/nmea")
if not CAPTURES.is_dir():
    CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "nmea"
ROOT = Path(__file__).resolve().parents[2]
ROLLOVER_DAYS = 1024 * 7  # one GPS week-number epoch


# ---- sentences ------------------------------------------------------------------------


def test_a_sentence_with_its_checksum_is_split_into_talker_type_and_fields() -> None:
    s = parse_sentence("$GPRMC,143444.28,A,4629.8972,N,00734.0447,E,0.1776,10.379,090605,2.3,E*5A\r\n")
    assert (s.talker, s.type, s.fields[1]) == ("GP", "RMC", "A")


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD"])
def test_every_constellation_talker_gives_the_same_fix(talker: str) -> None:
    line = with_checksum(f"{talker}RMC,120000.00,A,5230.0000,N,01324.0000,E,10.0,90.0,251126,,,A")
    rec = decode(parse_sentence(line))
    assert isinstance(rec, RMC)
    assert rec.valid and rec.lat == pytest.approx(52.5) and rec.lon == pytest.approx(13.4)
    assert rec.speed == pytest.approx(5.144, abs=1e-3) and rec.date == date(2026, 11, 25)


def test_southern_and_western_hemispheres_are_negative() -> None:
    rec = decode(parse_sentence(with_checksum("GPGGA,095305.802,2712.6547,S,04303.1350,W,1,04,21.1,3.0,M,42.2,M,,")))
    assert isinstance(rec, GGA)
    assert rec.lat == pytest.approx(-27.210911667) and rec.lon == pytest.approx(-43.05225)


def test_vtg_in_both_layouts_gives_speed_in_metres_per_second() -> None:
    new = decode(parse_sentence(with_checksum("GPVTG,133.96,T,,,1.93,N,3.57,K,A")))
    old = decode(parse_sentence(with_checksum("GPVTG,133.96,,1.93,3.57")))
    assert isinstance(new, VTG) and isinstance(old, VTG)
    assert new.speed == pytest.approx(0.993, abs=1e-3) == old.speed
    assert new.track == 133.96 == old.track


@pytest.mark.parametrize(("line", "reason"), [
    ("$GPRMC,143444.28,A,4629.8972,N,00734.0447,E,0.1776,10.379,090605,2.3,E*5B", "bad_checksum"),
    ("$GPRMC,143444.28,A,4629.8972,N,00734.04", "malformed"),  # truncated: no checksum
    ("$GPRMC,143444.28,A,4629.8972,N*", "malformed"),
    ("GPRMC,143444.28,A*00", "noise"),
    ("\x00\x7f\x13garbage", "noise"),
])
def test_bad_sentences_say_why(line: str, reason: str) -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence(line)
    assert err.value.reason == reason


def test_a_field_that_does_not_parse_is_malformed_not_a_crash() -> None:
    with pytest.raises(NmeaError) as err:
        decode(parse_sentence(with_checksum("GPGGA,12x000,52xx.00,N,01324.0000,E,1,04,1.0,30.0,M,,M,,")))
    assert err.value.reason == "malformed"


# ---- bad input in a stream ---------------------------------------------------------------


GOOD_EPOCH = [
    with_checksum("GPGGA,120000.00,5230.0000,N,01324.0000,E,1,08,0.9,35.0,M,40.0,M,,"),
    with_checksum("GPRMC,120000.00,A,5230.0000,N,01324.0000,E,20.0,45.0,251126,,,A"),
]


def test_bad_sentences_are_skipped_and_counted_and_good_ones_still_make_fixes() -> None:
    decoder = NmeaDecoder()
    stream = b"".join([
        b"\xff\xfe\x00\x01\x02binary noise\r\n",
        GOOD_EPOCH[0].encode() + b"\r\n",
        GOOD_EPOCH[1].replace("A*", "V*").encode() + b"\r\n",  # status changed, checksum not
        GOOD_EPOCH[1][:30].encode() + b"\r\n",  # truncated
        GOOD_EPOCH[1].encode() + b"\r\n",
        with_checksum("GPXYZ,1,2,3").encode() + b"\r\n",  # a type we do not use
        with_checksum("GPGSV,3,1,12,20,78,050,41").encode() + b"\r\n",
    ])
    fixes = decoder.feed(stream) + decoder.flush()
    assert [f.time for f in fixes] == ["2026-11-25T12:00:00.000Z"]
    assert fixes[0].mode == 3 and fixes[0].speed == pytest.approx(10.289, abs=1e-3)
    c = decoder.counters
    assert (c["noise"], c["bad_checksum"], c["malformed"], c["ignored"], c["sentences"]) == (1, 1, 1, 2, 2)


def test_random_bytes_never_crash_the_decoder() -> None:
    rng = random.Random(7)
    decoder = NmeaDecoder()
    good = ("\r\n".join(GOOD_EPOCH) + "\r\n").encode()
    fixes: list[Fix] = []
    for i in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        if i % 3 == 0:  # flip one byte of a good sentence
            b = bytearray(good)
            b[rng.randrange(len(b))] = rng.randrange(256)
            blob = bytes(b)
        fixes += decoder.feed(blob)
    fixes += decoder.flush()
    assert all(f.mode in (1, 2, 3) for f in fixes)
    assert decoder.counters["noise"] + decoder.counters["bad_checksum"] + decoder.counters["malformed"] > 100


def test_a_sentence_split_across_reads_is_reassembled() -> None:
    decoder = NmeaDecoder()
    data = ("\r\n".join(GOOD_EPOCH) + "\r\n").encode()
    fixes = [f for i in range(0, len(data), 7) for f in decoder.feed(data[i:i + 7])] + decoder.flush()
    assert len(fixes) == 1 and fixes[0].lat == pytest.approx(52.5)


def test_loss_of_fix_reports_mode_1_without_a_position() -> None:
    lines = [*GOOD_EPOCH, with_checksum("GPGGA,120001.00,,,,,0,00,,,M,,M,,"), with_checksum("GPRMC,120001.00,V,,,,,,,251126,,,N")]
    fixes, _ = decode_capture(lines)
    assert [(f.mode, f.lat) for f in fixes] == [(3, 52.5), (1, None)]


def test_the_cycle_ender_is_learned_so_an_epoch_is_reported_when_it_ends() -> None:
    decoder = NmeaDecoder()
    for second in range(3):
        gga, rmc = (with_checksum(s.replace("120000", f"12000{second}")) for s in (
            "GPGGA,120000.00,5230.0000,N,01324.0000,E,1,08,0.9,35.0,M,40.0,M,,",
            "GPRMC,120000.00,A,5230.0000,N,01324.0000,E,20.0,45.0,251126,,,A"))
        decoder.feed(gga.encode() + b"\r\n")
        fixes = decoder.feed(rmc.encode() + b"\r\n")
    # from the second cycle on, RMC closes the epoch: no need to wait for the next GGA
    assert decoder.tracker.cycle_ender == "RMC"
    assert [f.time for f in fixes] == ["2026-11-25T12:00:02.000Z"]


def test_a_sentence_without_a_time_that_opens_a_cycle_belongs_to_the_next_fix() -> None:
    lines = []
    for second, knots in ((0, "10.0"), (1, "20.0"), (2, "30.0")):
        lines.append(with_checksum(f"GPVTG,45.0,T,,M,{knots},N,,K,A"))  # this receiver starts with VTG
        lines.append(with_checksum(f"GPRMC,12000{second}.00,A,5230.0000,N,01324.0000,E,,,251126,,,A"))
    fixes, counters = decode_capture(lines)
    assert [f.speed for f in fixes] == [5.144, 10.289, 15.433]
    assert counters["late"] == 0


def test_a_cycle_without_a_date_after_midnight_rolls_the_date_on() -> None:
    lines = [with_checksum("GPRMC,235959.00,A,5230.0000,N,01324.0000,E,1.0,45.0,251126,,,A"),
             with_checksum("GPGGA,000000.00,5230.0000,N,01324.0000,E,1,08,0.9,35.0,M,40.0,M,,")]
    fixes, _ = decode_capture(lines)
    assert [f.time for f in fixes] == ["2026-11-25T23:59:59.000Z", "2026-11-26T00:00:00.000Z"]


# ---- the six captures against gpsd ----------------------------------------------------------

# Fixes we report at a time for which gpsd wrote no timed TPV, with the mode we report
# and why. Everything not listed here must match gpsd's TPV for the same time.
EXPLAINED_EXTRAS: dict[str, dict[str | None, int]] = {
    "bu303-moving.chk": {},
    "bu303-nofix.chk": {},
    # the first epoch after the fix is lost (RMC V, GGA quality 0): gpsd reports loss of
    # fix from the next epoch on; we report it at once.
    "bu353-glonass.chk": {"08:14:20.000": 1},
    # None: the capture starts with a GLL-only epoch, no date yet: gpsd reports it as a
    # timeless mode 2 TPV, as do we (see the timeless check below).
    # 23:57:26.020: gpsd closed that cycle with a SKY report and no TPV; we report the
    # epoch (RMC+VTG+GGA, identical to its neighbours).
    "gp-320fw-2019-04-06-overflow.chk": {None: 2, "23:57:26.020": 3},
    # No-fix epochs before the first fix: gpsd writes them as TPVs without a time (it
    # does not trust the time of an RMC with status V); we give them the receiver's time.
    # 09:53:04.802: RMC says A and GGA quality 1, so we report a fix; gpsd kept mode 1
    # from the previous cycle's GSA (A,1) and wrote a timeless mode-1 TPV.
    "haicom-305N.chk": {"09:52:55.810": 1, "09:52:57.809": 1, "09:52:58.809": 1, "09:53:00.809": 1,
                        "09:53:01.809": 1, "09:53:03.808": 1, "09:53:04.802": 3},
    # the same: no-fix epochs gpsd writes without a time, and the first fix (GGA then
    # RMC), which gpsd reports as a timeless TPV from the GGA alone.
    "motorola-t805.chk": {"21:26:07.891": 1, "21:26:08.879": 1, "21:26:09.879": 1, "21:26:10.879": 1,
                          "21:26:11.879": 1, "21:26:12.879": 1, "21:26:13.879": 1, "21:26:14.879": 3},
}


def _capture(name: str) -> tuple[list[str], list[dict[str, object]]]:
    lines = (CAPTURES / name).read_text().splitlines()
    tpvs = [json.loads(line) for line in lines if line.startswith("{")]
    return lines, [t for t in tpvs if t["class"] == "TPV"]


def _close(a: object, b: object, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(EXPLAINED_EXTRAS))
def test_capture_decodes_as_gpsd_decoded_it(name: str) -> None:
    lines, tpvs = _capture(name)
    fixes, counters = decode_capture(lines)
    assert counters["bad_checksum"] == counters["malformed"] == counters["noise"] == 0

    final: dict[str, dict[str, object]] = {}  # gpsd's last TPV for each time of day
    for tpv in tpvs:
        if "time" in tpv:
            final[str(tpv["time"])[11:23]] = tpv
    ours = {(f.time[11:23] if f.time else None): f for f in fixes}
    assert len(ours) == len(fixes), "one fix per epoch"

    # the same sequence: gpsd's times, in order, are a subsequence of ours
    our_times = [t for t in ours if t is not None]
    assert our_times == sorted(our_times)
    assert [t for t in our_times if t in final] == list(final)

    for t, tpv in final.items():
        fix = ours[t]
        where = f"{name} at {t}"
        assert fix.mode == tpv["mode"], where
        if tpv["mode"] == 1:
            assert fix.lat is None and fix.lon is None, f"{where}: no fix where gpsd has none"
        assert _close(fix.lat, tpv.get("lat"), 1e-6), where
        assert _close(fix.lon, tpv.get("lon"), 1e-6), where
        assert _close(fix.speed, tpv.get("speed"), 0.01), where
        assert _close(fix.track, tpv.get("track"), 0.01), where
        assert _close(fix.alt, tpv.get("alt"), 0.01), where  # gpsd rounds through ECEF: 1344.99 -> 1344.995
        # gpsd moved dates of receivers without a 4-digit year (no ZDA used) by one GPS
        # week rollover (1024 weeks), guessing from its own build date; we read the
        # receiver's date as sent.
        assert fix.time is not None
        ours_date = date.fromisoformat(fix.time[:10])
        gpsd_date = date.fromisoformat(str(tpv["time"])[:10])
        assert (gpsd_date - ours_date).days in (0, ROLLOVER_DAYS), where

    extras = {t: ours[t].mode for t in ours if t not in final}
    assert extras == EXPLAINED_EXTRAS[name]
    # every extra fix with a position is one gpsd reported without a time (or, for
    # gp-320fw 23:57:26.020 and haicom 09:53:04.802, is the position the receiver sent)
    timeless = [t for t in tpvs if "time" not in t and "lat" in t]
    for t, mode in extras.items():
        fix = ours[t]
        if mode == 1:
            assert fix.lat is None
        elif (name, t) not in {("gp-320fw-2019-04-06-overflow.chk", "23:57:26.020"),
                               ("haicom-305N.chk", "09:53:04.802")}:
            assert any(_close(fix.lat, g["lat"], 1e-6) and _close(fix.lon, g["lon"], 1e-6)
                       and g["mode"] == mode for g in timeless), f"{name} {t}"
    if name == "haicom-305N.chk":
        assert (ours["09:53:04.802"].lat, ours["09:53:04.802"].lon) == (-27.210866667, 153.052328333)
    if name == "gp-320fw-2019-04-06-overflow.chk":
        assert ours["23:57:26.020"].alt == 464.5


def test_capture_without_a_fix_reports_no_position() -> None:
    fixes, _ = decode_capture(_capture("bu303-nofix.chk")[0])
    assert len(fixes) == 7 and {f.mode for f in fixes} == {1}
    assert all(f.lat is None and f.speed is None for f in fixes)


# ---- the serial shell, through a real pseudo-terminal ----------------------------------------


@pytest.mark.parametrize("name", sorted(EXPLAINED_EXTRAS))
def test_every_capture_reads_the_same_through_a_pseudo_terminal(name: str) -> None:
    lines, _ = _capture(name)
    expected, _ = decode_capture(lines)
    with_ts = [f for f in expected if f.ts is not None]
    master, slave = os.openpty()
    tty.setraw(slave)
    sensor = GpsSensor("gps", os.ttyname(slave), idle_flush=0.2)
    sensor.open()
    try:
        data = "".join(line + "\r\n" for line in lines if line.startswith("$")).encode()
        readings = []
        for i in range(0, len(data), 1024):  # a pty holds a few KiB: the driver must keep reading
            os.write(master, data[i:i + 1024])
            readings += sensor.poll()
        deadline = time.monotonic() + 5
        while len(readings) < len(expected) and time.monotonic() < deadline:
            readings += sensor.poll()
            time.sleep(0.01)
    finally:
        sensor.close()
        os.close(master)
        os.close(slave)
    assert [r.data for r in readings] == [f.to_json() for f in expected]
    assert [r.ts for r in readings if r.data["time"] is not None] == [f.ts for f in with_ts]


def test_gps_sensor_reads_a_capture_through_a_pseudo_terminal() -> None:
    lines, _tpvs = _capture("haicom-305N.chk")
    master, slave = os.openpty()
    tty.setraw(slave)
    sensor = GpsSensor("gps", os.ttyname(slave), baudrate=4800, idle_flush=0.3)
    sensor.open()
    try:
        readings = []
        payload = "".join(line + "\r\n" for line in lines if line.startswith("$"))
        payload = "\x00\xff\xfe noise\r\n" + payload  # a receiver's power-up garbage
        data = payload.encode("latin-1")
        for i in range(0, len(data), 512):
            os.write(master, data[i:i + 512])
            readings += sensor.poll()
        deadline = time.monotonic() + 5
        expected, _ = decode_capture(lines)
        while len(readings) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.02)
            readings += sensor.poll()
    finally:
        sensor.close()
        os.close(master)
        os.close(slave)
    assert [r.data for r in readings] == [f.to_json() for f in expected]
    assert {r.kind for r in readings} == {"gps"}
    first_fix = next(r for r in readings if r.data["mode"] == 3)
    assert first_fix.ts == expected[6].ts and first_fix.data["lat"] == pytest.approx(-27.2108667, abs=1e-6)
    assert sensor.stats()["bad_sentences"] == 1 and sensor.stats()["fixes"] == len(expected)


def test_a_receiver_that_goes_away_is_a_sensor_error_not_a_hang() -> None:
    from edge.sensors.base import SensorError

    master, slave = os.openpty()
    tty.setraw(slave)
    sensor = GpsSensor("gps", os.ttyname(slave))
    sensor.open()
    os.close(slave)  # the driver keeps its own descriptor
    os.close(master)  # the device end is gone: unplugged
    try:
        with pytest.raises(SensorError, match="gps"):
            sensor.poll()
    finally:
        sensor.close()


def test_opening_a_missing_port_names_it() -> None:
    from edge.sensors.base import SensorError

    with pytest.raises(SensorError, match="/dev/nonexistent-gps"):
        GpsSensor("gps", "/dev/nonexistent-gps").open()


# ---- vigil edge replay --------------------------------------------------------------------


def test_replay_prints_one_json_line_per_fix(tmp_path: Path) -> None:
    capture = tmp_path / "drive.nmea"
    capture.write_text("# a comment\n" + (CAPTURES / "motorola-t805.chk").read_text())
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "edge", "replay", "--nmea", str(capture)],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 25
    assert {"time", "mode", "lat", "lon", "speed", "track"} <= set(rows[0])
    moving = [r for r in rows if r["mode"] == 3]
    assert moving[1] == {"time": "2007-12-18T21:26:15.879Z", "mode": 3, "lat": 48.66566, "lon": 2.248181667,
                         "speed": 0.401, "track": 237.93, "alt": 140.3}
    assert rows[0]["mode"] == 1 and rows[0]["lat"] is None
