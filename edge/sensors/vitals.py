"""Bedside vital-signs monitor over a serial line: the Vigil vitals line protocol.

The protocol
============

The monitor sends one ASCII line per measurement cycle (typically every 1-5 s), at any
baud rate (default 9600 8N1), ending in CR LF::

    VS,hr=72,spo2=97,rr=16,temp=36.8,sys=121,dia=79,o2=0,avpu=A*45

* ``VS`` opens the line; then comma-separated ``key=value`` fields in any order;
  then ``*`` and the checksum: two upper-case hex digits, the XOR of every byte
  between the start of the line and the ``*`` (as in NMEA 0183, counting the ``V``).
* keys (unknown keys are ignored, so monitors may add their own):

  ======  ===========================  ========  ==================
  key     meaning                      unit      valid values
  ======  ===========================  ========  ==================
  hr      heart rate                   /min      0-300 (integer)
  spo2    oxygen saturation            %         0-100 (integer)
  rr      respiratory rate             /min      0-99 (integer)
  temp    body temperature             °C        25.0-45.0
  sys     systolic blood pressure      mmHg      0-300 (integer)
  dia     diastolic blood pressure     mmHg      0-300 (integer)
  o2      on supplemental oxygen       —         0 or 1
  avpu    consciousness (ACVPU)        —         A, C, V, P or U
  probe   pulse-oximeter probe         —         on or off
  ======  ===========================  ========  ==================

* a value left empty (``spo2=``) or a key left out means "not measured this cycle".
* ``probe=off``: the finger probe came off. SpO2 (and the heart rate, which comes
  from the same probe) are then not measured, whatever the line says; the monitor
  keeps sending lines so the gateway can tell "probe off" from "monitor gone".

A line with a wrong checksum, a missing checksum, a value that does not parse or is
out of range is rejected whole and counted; it is never guessed at.

Readings: kind ``vitals``, data ``{"heart_rate", "spo2", "resp_rate", "temp_c",
"sys_bp", "dia_bp", "on_oxygen", "consciousness", "probe_off"}`` (``None`` for what was
not measured). Config options (``type = "vitals"``): ``port`` (required), ``baudrate``
(9600).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.sensors.base import Reading
from edge.sensors.options import opt_int, opt_str
from edge.sensors.serial_link import SerialLink

__all__ = ["Vitals", "VitalsDecoder", "VitalsError", "VitalsSensor", "encode_vitals", "make_vitals",
           "parse_vitals_line"]

log = logging.getLogger("vigil.edge")

MAX_LINE = 160
AVPU = frozenset("ACVPU")


class VitalsError(ValueError):
    """A rejected line; ``reason`` is ``bad_checksum``, ``malformed`` or ``noise``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Vitals:
    heart_rate: int | None = None
    spo2: int | None = None
    resp_rate: int | None = None
    temp_c: float | None = None
    sys_bp: int | None = None
    dia_bp: int | None = None
    on_oxygen: bool | None = None
    consciousness: str | None = None  # A, C, V, P or U
    probe_off: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"heart_rate": self.heart_rate, "spo2": self.spo2, "resp_rate": self.resp_rate,
                "temp_c": self.temp_c, "sys_bp": self.sys_bp, "dia_bp": self.dia_bp,
                "on_oxygen": self.on_oxygen, "consciousness": self.consciousness,
                "probe_off": self.probe_off}


def _checksum(body: str) -> str:
    x = 0
    for ch in body.encode("ascii"):
        x ^= ch
    return f"{x:02X}"


_INTS = {"hr": ("heart_rate", 0, 300), "spo2": ("spo2", 0, 100), "rr": ("resp_rate", 0, 99),
         "sys": ("sys_bp", 0, 300), "dia": ("dia_bp", 0, 300)}


def parse_vitals_line(line: str | bytes) -> Vitals:
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise VitalsError("noise", "not ASCII") from None
    line = line.strip("\r\n")
    if not line.startswith("VS,") and line != "VS":
        raise VitalsError("noise", "does not start with VS")
    if len(line) > MAX_LINE or not all(" " <= ch <= "~" for ch in line):
        raise VitalsError("malformed", "too long or control characters")
    star = line.rfind("*")
    if star < 0 or len(line) - star != 3:
        raise VitalsError("malformed", "no *hh checksum at the end (truncated?)")
    body, given = line[:star], line[star + 1:].upper()
    if given != _checksum(body):
        raise VitalsError("bad_checksum", f"checksum {given}, computed {_checksum(body)}")
    values: dict[str, Any] = {}
    for item in body.split(",")[1:]:
        key, eq, value = item.partition("=")
        if not eq:
            raise VitalsError("malformed", f"field {item!r} is not key=value")
        if not value:
            continue
        if key in _INTS:
            name, lo, hi = _INTS[key]
            if not value.isdigit() or not lo <= int(value) <= hi:
                raise VitalsError("malformed", f"{key}={value!r}: expected an integer {lo}-{hi}")
            values[name] = int(value)
        elif key == "temp":
            try:
                t = float(value)
            except ValueError:
                raise VitalsError("malformed", f"temp={value!r}") from None
            if not 25.0 <= t <= 45.0:
                raise VitalsError("malformed", f"temp={value!r}: expected 25.0-45.0")
            values["temp_c"] = t
        elif key == "o2":
            if value not in ("0", "1"):
                raise VitalsError("malformed", f"o2={value!r}: expected 0 or 1")
            values["on_oxygen"] = value == "1"
        elif key == "avpu":
            if value not in AVPU:
                raise VitalsError("malformed", f"avpu={value!r}: expected A, C, V, P or U")
            values["consciousness"] = value
        elif key == "probe":
            if value not in ("on", "off"):
                raise VitalsError("malformed", f"probe={value!r}: expected on or off")
            values["probe_off"] = value == "off"
    if values.get("probe_off"):
        values.pop("spo2", None)
        values.pop("heart_rate", None)
    return Vitals(**values)


def encode_vitals(v: Vitals) -> bytes:
    """The line a monitor sends for ``v`` (with CR LF)."""
    def fmt(x: object) -> str:
        return "" if x is None else str(x)

    fields = [f"hr={fmt(v.heart_rate)}", f"spo2={fmt(v.spo2)}", f"rr={fmt(v.resp_rate)}",
              f"temp={'' if v.temp_c is None else f'{v.temp_c:.1f}'}", f"sys={fmt(v.sys_bp)}",
              f"dia={fmt(v.dia_bp)}", f"o2={'' if v.on_oxygen is None else int(v.on_oxygen)}",
              f"avpu={fmt(v.consciousness)}"]
    if v.probe_off:
        fields.append("probe=off")
    body = "VS," + ",".join(fields)
    return f"{body}*{_checksum(body)}\r\n".encode("ascii")


class VitalsDecoder:
    """Bytes in, ``Vitals`` out; rejected lines counted in ``counters``."""

    def __init__(self) -> None:
        self._buffer = b""
        self.counters = {"lines": 0, "bad_checksum": 0, "malformed": 0, "noise": 0}

    def feed(self, data: bytes) -> list[Vitals]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > 4 * MAX_LINE:
            self.counters["noise"] += 1
            self._buffer = b""
        out = []
        for raw in lines:
            raw = raw.strip(b"\r\x00 ")
            if not raw:
                continue
            start = raw.rfind(b"VS,")
            if start > 0:  # noise before the line
                self.counters["noise"] += 1
                raw = raw[start:]
            try:
                out.append(parse_vitals_line(raw))
            except VitalsError as exc:
                self.counters[exc.reason] += 1
                log.debug("skipped vitals line %r: %s", raw[:40], exc)
                continue
            self.counters["lines"] += 1
        return out


class VitalsSensor:
    kind = "vitals"

    def __init__(self, name: str, port: str, baudrate: int = 9600,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.link = SerialLink(name, port, baudrate)
        self._decoder = VitalsDecoder()
        self._clock = clock

    def open(self) -> None:
        self.link.open()

    def poll(self) -> list[Reading]:
        data = self.link.read_available()
        if not data:
            return []
        ts = int(self._clock() * 1000)  # the monitor has no clock of its own: time of arrival
        return [Reading(self.kind, v.to_json(), ts) for v in self._decoder.feed(data)]

    def close(self) -> None:
        self.link.close()

    def stats(self) -> dict[str, int]:
        c = self._decoder.counters
        return {**c, "bad_lines": c["bad_checksum"] + c["malformed"] + c["noise"]}


def make_vitals(name: str, options: dict[str, Any]) -> VitalsSensor:
    return VitalsSensor(name, opt_str(options, "port"), opt_int(options, "baudrate", 9600, lo=50))
