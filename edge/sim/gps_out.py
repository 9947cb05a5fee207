"""What a simulated GPS receiver sends each second: RMC, VTG, GGA and GSA with checksums."""

from __future__ import annotations

from datetime import UTC, datetime

from edge.sensors.nmea import KNOT, with_checksum
from edge.sim.vehicle import VehicleState

__all__ = ["nmea_epoch"]


def _lat(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:02d}{(a - d) * 60:08.5f}", "N" if v >= 0 else "S"


def _lon(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:03d}{(a - d) * 60:08.5f}", "E" if v >= 0 else "W"


def nmea_epoch(when: float, state: VehicleState, talker: str = "GP") -> bytes:
    """One reporting cycle for the instant ``when`` (seconds since the epoch, UTC)."""
    t = datetime.fromtimestamp(when, UTC)
    hms = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
    dmy = t.strftime("%d%m%y")
    if state.gps_fix:
        lat, ns = _lat(state.lat)
        lon, ew = _lon(state.lon)
        knots = state.speed / KNOT
        track = f"{state.heading:.1f}"
        sentences = [
            f"{talker}RMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.2f},{track},{dmy},,,A",
            f"{talker}VTG,{track},T,,M,{knots:.2f},N,{state.speed * 3.6:.2f},K,A",
            f"{talker}GGA,{hms},{lat},{ns},{lon},{ew},1,08,0.9,{state.alt:.1f},M,44.5,M,,",
            f"{talker}GSA,A,3,04,07,09,16,20,23,27,30,,,,,1.6,0.9,1.3",
        ]
    else:
        sentences = [
            f"{talker}RMC,{hms},V,,,,,,,{dmy},,,N",
            f"{talker}VTG,,T,,M,,N,,K,N",
            f"{talker}GGA,{hms},,,,,0,00,99.9,,M,,M,,",
            f"{talker}GSA,A,1,,,,,,,,,,,,,99.9,99.9,99.9",
        ]
    return "".join(with_checksum(s) + "\r\n" for s in sentences).encode("ascii")
