"""NMEA 0183 without I/O: bytes in, GPS fixes out.

Three layers, each usable alone:

* ``parse_sentence(line)`` checks framing and checksum and splits one sentence into
  talker, type and fields (``NmeaError`` with the reason otherwise);
* ``decode(sentence)`` turns the sentences a fix is made of (RMC, GGA, GLL, VTG, GSA,
  ZDA; any talker: GP, GN, GL, GA, BD, ...) into small typed records;
* ``FixTracker`` merges the records of one reporting cycle ("epoch": every sentence
  carrying the same UTC time of day) into one ``Fix``, the way gpsd does.

``NmeaDecoder`` strings them together behind ``feed(bytes) -> list[Fix]`` and counts
what it had to skip: a wrong checksum, a truncated or malformed sentence, binary noise
and sentence types it does not use are counted, never raised.

When is an epoch complete? A receiver sends its sentences in a fixed order every
cycle, but which sentence comes last differs between receivers. Like gpsd, the tracker
learns it: when a sentence with a new time of day arrives, the previous epoch is over,
and the last sentence type it held is remembered as the cycle ender. From then on an
epoch is reported as soon as its cycle ender arrives, without waiting a whole cycle
for the next one. (gpsd's ``driver_nmea0183.c`` does the same with the last
*timestamped* sentence, but keeps every type it ever tagged as an ender and reports at
each of them, which is why its logs hold several TPVs for one time; we keep the latest
ender and report an epoch once.) Sentences of an epoch that arrive after it was reported are counted
as ``late`` and dropped, so there is exactly one fix per epoch (a sentence without a
time of its own, VTG or GSA, arriving after that opens the next epoch, and so does a
second VTG in one epoch: that is how a receiver that starts its cycle with VTG is
told apart before its cycle ender is known). ``flush()`` reports
an epoch still open (end of a capture, a receiver that went quiet).

A fix reports ``mode`` 1 (no fix: RMC status V, GGA quality 0, GLL status V or an
FAA mode indicator N), 3 (a GGA altitude, or a GSA saying 3-D) or 2 (a position
without either). Without a fix there is no position, speed or track. ``speed`` is in
m/s (RMC knots, else VTG knots or km/h), ``track`` in degrees true, ``alt`` the GGA
altitude above mean sea level in metres. ``time`` is ISO 8601 UTC with milliseconds,
from the epoch's time of day and the last date seen (RMC or ZDA; a GGA-only epoch
after midnight rolls the date on); ``None`` while no date has been seen yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = [
    "GGA",
    "GLL",
    "GSA",
    "RMC",
    "VTG",
    "ZDA",
    "Fix",
    "FixTracker",
    "NmeaDecoder",
    "NmeaError",
    "Sentence",
    "checksum",
    "decode",
    "parse_sentence",
]

log = logging.getLogger("vigil.edge")

KNOT = 1852.0 / 3600.0  # m/s
KMH = 1000.0 / 3600.0  # m/s
MAX_SENTENCE = 120  # NMEA says 82; some receivers send longer proprietary lines
USED_TYPES = frozenset({"RMC", "GGA", "GLL", "VTG", "GSA", "ZDA"})


class NmeaError(ValueError):
    """A line that is not a usable NMEA sentence. ``reason`` is a counter name:
    ``bad_checksum``, ``malformed`` or ``noise``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Sentence:
    talker: str  # "GP", "GN", "GL", "GA", "BD", ...; "P" for proprietary
    type: str  # "RMC", "GGA", ...
    fields: tuple[str, ...]


def checksum(body: str) -> str:
    """The two hex digits that follow ``*``: XOR of every character between ``$`` and ``*``."""
    x = 0
    for ch in body.encode("ascii"):
        x ^= ch
    return f"{x:02X}"


def with_checksum(body: str) -> str:
    """``GPRMC,...`` -> ``$GPRMC,...*hh`` (for simulators and tests)."""
    return f"${body}*{checksum(body)}"


def parse_sentence(line: str | bytes) -> Sentence:
    """One sentence, with or without its line ending. The checksum is required."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise NmeaError("noise", "not ASCII") from None
    line = line.strip("\r\n")
    if not line.startswith("$"):
        raise NmeaError("noise", "does not start with $")
    if len(line) > MAX_SENTENCE:
        raise NmeaError("malformed", f"{len(line)} characters")
    if not all(" " <= ch <= "~" for ch in line):
        raise NmeaError("noise", "control characters")
    star = line.rfind("*")
    if star < 0 or len(line) - star != 3:
        raise NmeaError("malformed", "no *hh checksum at the end (truncated?)")
    body, given = line[1:star], line[star + 1:].upper()
    if given != checksum(body):
        raise NmeaError("bad_checksum", f"checksum {given}, computed {checksum(body)}")
    parts = body.split(",")
    address = parts[0]
    if address.startswith("P"):
        return Sentence("P", address[1:], tuple(parts[1:]))
    if len(address) != 5 or not address.isalnum():
        raise NmeaError("malformed", f"address field {address!r}")
    return Sentence(address[:2], address[2:], tuple(parts[1:]))


# ---- typed records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RMC:
    tod: int | None  # ms since midnight UTC
    valid: bool
    lat: float | None
    lon: float | None
    speed: float | None  # m/s
    track: float | None
    date: date | None


@dataclass(frozen=True, slots=True)
class GGA:
    tod: int | None
    quality: int  # 0 invalid, 1 GPS, 2 DGPS, ...
    lat: float | None
    lon: float | None
    satellites: int | None
    alt: float | None  # metres above MSL


@dataclass(frozen=True, slots=True)
class GLL:
    tod: int | None
    valid: bool
    lat: float | None
    lon: float | None


@dataclass(frozen=True, slots=True)
class VTG:
    valid: bool
    track: float | None
    speed: float | None  # m/s


@dataclass(frozen=True, slots=True)
class GSA:
    mode: int  # 1 no fix, 2, 3


@dataclass(frozen=True, slots=True)
class ZDA:
    tod: int | None
    date: date | None


Record = RMC | GGA | GLL | VTG | GSA | ZDA


def _field(fields: tuple[str, ...], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _float(text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise NmeaError("malformed", f"not a number: {text!r}") from None


def _tod(text: str) -> int | None:
    """``hhmmss[.sss]`` -> ms since midnight."""
    if not text:
        return None
    try:
        hh, mm, ss = int(text[0:2]), int(text[2:4]), float(text[4:])
    except ValueError:
        raise NmeaError("malformed", f"time {text!r}") from None
    if len(text) < 6 or hh > 23 or mm > 59 or ss >= 61:
        raise NmeaError("malformed", f"time {text!r}")
    return (hh * 3600 + mm * 60) * 1000 + round(ss * 1000)


def _coord(value: str, hemi: str, degree_digits: int) -> float | None:
    """``dddmm.mmmm`` and a hemisphere letter -> signed decimal degrees."""
    if not value:
        return None
    dot = value.find(".")
    split = (dot if dot >= 0 else len(value)) - 2
    if split < 1 or split > degree_digits:
        raise NmeaError("malformed", f"coordinate {value!r}")
    try:
        degrees, minutes = int(value[:split]), float(value[split:])
    except ValueError:
        raise NmeaError("malformed", f"coordinate {value!r}") from None
    if minutes >= 60:
        raise NmeaError("malformed", f"coordinate {value!r}")
    result = degrees + minutes / 60.0
    if hemi in ("S", "W"):
        return -result
    if hemi in ("N", "E"):
        return result
    raise NmeaError("malformed", f"hemisphere {hemi!r}")


def _latlon(fields: tuple[str, ...], i: int) -> tuple[float | None, float | None]:
    lat = _coord(_field(fields, i), _field(fields, i + 1), 2)
    lon = _coord(_field(fields, i + 2), _field(fields, i + 3), 3)
    if lat is None or lon is None:
        return None, None
    if abs(lat) > 90 or abs(lon) > 180:
        raise NmeaError("malformed", f"position {lat}, {lon}")
    return lat, lon


def _date(day: str, month: str, year: int) -> date:
    try:
        return date(year, int(month), int(day))
    except ValueError:
        raise NmeaError("malformed", f"date {day}/{month}/{year}") from None


def decode(s: Sentence) -> Record | None:
    """The record of a sentence a fix is made of; ``None`` for other types."""
    f = s.fields
    if s.talker == "P" or s.type not in USED_TYPES:
        return None
    if s.type == "RMC":
        if len(f) < 9:
            raise NmeaError("malformed", f"RMC with {len(f)} fields")
        faa = _field(f, 11)
        valid = f[1] == "A" and faa != "N"
        lat, lon = _latlon(f, 2)
        speed = _float(f[6])
        d = f[8]
        when = None
        if d:
            if len(d) != 6 or not d.isdigit():
                raise NmeaError("malformed", f"RMC date {d!r}")
            yy = int(d[4:6])
            when = _date(d[0:2], d[2:4], 2000 + yy if yy < 80 else 1900 + yy)
        return RMC(_tod(f[0]), valid, lat, lon, None if speed is None else speed * KNOT,
                   _float(f[7]), when)
    if s.type == "GGA":
        if len(f) < 9:
            raise NmeaError("malformed", f"GGA with {len(f)} fields")
        lat, lon = _latlon(f, 1)
        quality = int(f[5]) if f[5].isdigit() else 0
        sats = int(f[6]) if f[6].isdigit() else None
        return GGA(_tod(f[0]), quality, lat, lon, sats, _float(f[8]))
    if s.type == "GLL":
        if len(f) < 4:
            raise NmeaError("malformed", f"GLL with {len(f)} fields")
        lat, lon = _latlon(f, 0)
        status = _field(f, 5)
        valid = (status == "A" or (status == "" and lat is not None)) and _field(f, 6) != "N"
        return GLL(_tod(_field(f, 4)), valid, lat, lon)
    if s.type == "VTG":
        if len(f) >= 8 and f[1] == "T":  # NMEA 2.3: course,T,course,M,knots,N,kmh,K[,mode]
            track, knots, kmh, mode = _float(f[0]), _float(f[4]), _float(f[6]), _field(f, 8)
        elif len(f) >= 4:  # NMEA 1.x: course true, course magnetic, knots, km/h
            track, knots, kmh, mode = _float(f[0]), _float(f[2]), _float(f[3]), ""
        else:
            raise NmeaError("malformed", f"VTG with {len(f)} fields")
        speed = knots * KNOT if knots is not None else (kmh * KMH if kmh is not None else None)
        return VTG(mode != "N", track, speed)
    if s.type == "GSA":
        if len(f) < 2:
            raise NmeaError("malformed", f"GSA with {len(f)} fields")
        return GSA(int(f[1]) if f[1] in ("1", "2", "3") else 1)
    if s.type == "ZDA":
        if len(f) < 4:
            raise NmeaError("malformed", f"ZDA with {len(f)} fields")
        when = None
        if f[1] and f[2] and f[3]:
            if not f[3].isdigit():
                raise NmeaError("malformed", f"ZDA year {f[3]!r}")
            when = _date(f[1], f[2], int(f[3]))
        return ZDA(_tod(f[0]), when)
    return None


# ---- fixes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fix:
    time: str | None  # ISO 8601 UTC with milliseconds, "2005-06-09T14:34:44.280Z"
    ts: int | None  # the same instant in ms since the epoch
    mode: int  # 1 no fix, 2 2-D, 3 3-D
    lat: float | None = None
    lon: float | None = None
    speed: float | None = None  # m/s
    track: float | None = None  # degrees true
    alt: float | None = None  # metres above mean sea level

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "mode": self.mode, "lat": self.lat, "lon": self.lon,
                "speed": self.speed, "track": self.track, "alt": self.alt}


@dataclass(slots=True)
class _Epoch:
    tod: int | None = None
    records: list[Record] = field(default_factory=list)
    last_type: str | None = None
    reported: bool = False

    @property
    def has_fix_data(self) -> bool:
        return any(isinstance(r, RMC | GGA | GLL) for r in self.records)


class FixTracker:
    """Merges decoded sentences into one ``Fix`` per epoch (see the module docstring)."""

    def __init__(self) -> None:
        self._epoch = _Epoch()
        self._ender: str | None = None
        self._date: date | None = None
        self._last_tod: int | None = None
        self.late = 0  # sentences of an epoch that had already been reported

    @property
    def cycle_ender(self) -> str | None:
        return self._ender

    def feed(self, sentence_type: str, record: Record) -> list[Fix]:
        out: list[Fix] = []
        tod = getattr(record, "tod", None)
        epoch = self._epoch
        if tod is not None and epoch.tod is not None and tod != epoch.tod:
            if not epoch.reported and epoch.has_fix_data:
                out.append(self._report(epoch))
            if epoch.last_type is not None:
                self._ender = epoch.last_type
            epoch = self._epoch = _Epoch()
        if tod is None and not epoch.reported and epoch.tod is not None and any(
                isinstance(r, VTG) for r in epoch.records) and isinstance(record, VTG):
            # a second VTG cannot be of the same epoch (GSA can: one per constellation)
            if epoch.has_fix_data:
                out.append(self._report(epoch))
            self._ender = epoch.last_type
        if epoch.reported:
            if tod is not None:  # same time as the epoch already reported: a latecomer
                self.late += 1
                return out
            # no time of its own (VTG, GSA): the first sentence of the next epoch
            epoch = self._epoch = _Epoch()
        if tod is not None:
            epoch.tod = tod
        epoch.records.append(record)
        epoch.last_type = sentence_type
        if sentence_type == self._ender and epoch.tod is not None and epoch.has_fix_data:
            out.append(self._report(epoch))
        return out

    def flush(self) -> list[Fix]:
        """Report the open epoch, if it has anything to report."""
        epoch = self._epoch
        if epoch.reported or not epoch.has_fix_data:
            return []
        return [self._report(epoch)]

    def _report(self, epoch: _Epoch) -> Fix:
        epoch.reported = True
        no_fix = False
        mode3 = False
        lat = lon = speed = track = alt = None
        vtg_speed = vtg_track = None
        epoch_date: date | None = None
        for r in epoch.records:
            if isinstance(r, RMC):
                no_fix |= not r.valid
                if r.lat is not None:
                    lat, lon = r.lat, r.lon
                if r.speed is not None:
                    speed = r.speed
                if r.track is not None:
                    track = r.track
                epoch_date = r.date or epoch_date
            elif isinstance(r, GGA):
                no_fix |= r.quality == 0
                if r.lat is not None:
                    lat, lon = r.lat, r.lon
                if r.alt is not None and r.quality > 0:
                    alt = r.alt
                    mode3 = True
            elif isinstance(r, GLL):
                no_fix |= not r.valid
                if r.lat is not None:
                    lat, lon = r.lat, r.lon
            elif isinstance(r, VTG):
                if r.valid:
                    vtg_speed, vtg_track = r.speed, r.track
            elif isinstance(r, GSA):
                mode3 |= r.mode == 3
            elif isinstance(r, ZDA):
                epoch_date = epoch_date or r.date
        tod = epoch.tod
        assert tod is not None
        if epoch_date is not None:
            self._date = epoch_date
        elif self._date is not None and self._last_tod is not None and tod < self._last_tod - 12 * 3600_000:
            self._date += timedelta(days=1)  # midnight passed in a cycle without a date
        self._last_tod = tod
        time_iso: str | None = None
        ts: int | None = None
        if self._date is not None:
            instant = datetime(self._date.year, self._date.month, self._date.day, tzinfo=UTC) + timedelta(milliseconds=tod)
            ts = int(instant.timestamp() * 1000)
            time_iso = instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{tod % 1000:03d}Z"
        if no_fix or lat is None:
            return Fix(time_iso, ts, 1)
        if speed is None:
            speed = vtg_speed
        if track is None:
            track = vtg_track
        return Fix(time_iso, ts, 3 if mode3 else 2, round(lat, 9), round(lon, 9),  # type: ignore[arg-type]
                   None if speed is None else round(speed, 3), track, alt if mode3 else None)


class NmeaDecoder:
    """Bytes from a receiver in, fixes out; everything skipped is counted in ``counters``."""

    MAX_LINE = 1024  # bytes without a newline before the buffer is thrown away as noise

    def __init__(self) -> None:
        self._buffer = b""
        self.tracker = FixTracker()
        self.counters: dict[str, int] = {
            "sentences": 0,  # good sentences of a type a fix is made of
            "ignored": 0,  # good sentences of other types (GSV, GBS, proprietary, ...)
            "bad_checksum": 0,
            "malformed": 0,  # truncated, missing checksum, fields that do not parse
            "noise": 0,  # lines that are not sentences at all (binary, garbage)
            "late": 0,
        }

    def feed(self, data: bytes) -> list[Fix]:
        self._buffer += data
        fixes: list[Fix] = []
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self.MAX_LINE:
            self.counters["noise"] += 1
            self._buffer = b""
        for line in lines:
            fixes.extend(self.feed_line(line))
        return fixes

    def feed_line(self, line: bytes | str) -> list[Fix]:
        if isinstance(line, bytes):
            line = line.strip(b"\r\n\x00 ")
            if not line:
                return []
            # a sentence may follow binary noise on the same line: keep from the last '$'
            dollar = line.rfind(b"$")
            if dollar > 0:
                self.counters["noise"] += 1
                line = line[dollar:]
        elif not line.strip():
            return []
        try:
            sentence = parse_sentence(line)
            record = decode(sentence)
        except NmeaError as exc:
            self.counters[exc.reason] += 1
            log.debug("skipped NMEA line %r: %s", line[:40], exc)
            return []
        if record is None:
            self.counters["ignored"] += 1
            return []
        self.counters["sentences"] += 1
        before = self.tracker.late
        fixes = self.tracker.feed(sentence.type, record)
        self.counters["late"] += self.tracker.late - before
        return fixes

    def flush(self) -> list[Fix]:
        fixes = self.feed_line(self._buffer) if self._buffer.strip() else []
        self._buffer = b""
        return fixes + self.tracker.flush()


def decode_capture(lines: list[str]) -> tuple[list[Fix], dict[str, int]]:
    """Fixes of a capture file's ``$`` lines (everything else ignored), and the counters."""
    decoder = NmeaDecoder()
    fixes: list[Fix] = []
    for line in lines:
        if line.startswith("$"):
            fixes.extend(decoder.feed_line(line))
    fixes.extend(decoder.flush())
    return fixes, decoder.counters
