"""The National Early Warning Score 2 (Royal College of Physicians, 2017), as a pure function.

``news2(resp_rate, spo2, spo2_scale, on_oxygen, systolic_bp, pulse, consciousness,
temperature)`` scores each parameter by the RCP chart and aggregates:

==========================  ======  =====  ======  =============================  ===========  ===========  ======
parameter                   3       2      1       0                              1            2            3
==========================  ======  =====  ======  =============================  ===========  ===========  ======
respiration rate /min       ≤8             9-11    12-20                                       21-24        ≥25
SpO2 scale 1 %              ≤91     92-93  94-95   ≥96
SpO2 scale 2 %              ≤83     84-85  86-87   88-92, or ≥93 on air           93-94 on O2  95-96 on O2  ≥97 on O2
air or oxygen                       O2             air
systolic BP mmHg            ≤90     91-100 101-110 111-219                                                  ≥220
pulse /min                  ≤40            41-50   51-90                          91-110       111-130      ≥131
consciousness                                      A                                                        C, V, P, U
temperature °C              ≤35.0          35.1-36 36.1-38.0                      38.1-39.0    ≥39.1
==========================  ======  =====  ======  =============================  ===========  ===========  ======

Risk and response (RCP 2017, chart 2): aggregate 0 → ``low`` (routine monitoring);
1-4 → ``low`` (registered nurse assessment); any single parameter scoring 3 with an
aggregate below 5 → ``low-medium`` (urgent ward-based review); 5-6 → ``medium``
(urgent response); 7 or more → ``high`` (emergency response).

Choices made here (the chart leaves them open):

* The printed bands are read as upper bounds, so the chart has no gaps for values it
  does not print: a temperature of 35.05 °C scores as 35.1-36.0 would (1), a
  respiration rate of 11.5 /min as 12-20 (0).
* A parameter given as ``None`` was not measured: it scores nothing and is named in
  ``missing``. The total is then a lower bound of the true score (every missing
  parameter could only add), so a risk computed from a partial set is never
  overstated; callers that need the full score check ``complete``. On SpO2 scale 2,
  a saturation of 93 % or more with ``on_oxygen`` unknown scores as on air (0), the
  lower bound again.
* Impossible input raises ``News2Error`` (a ``ValueError``): non-numbers, non-finite
  numbers, and values outside what a bedside monitor can report (the Vigil vitals
  line's ranges): respiration 0-99, SpO2 0-100, systolic 0-300, pulse 0-300,
  temperature 25.0-45.0 °C; a scale other than 1 or 2; a consciousness other than
  A, C, V, P or U.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["PARAMETERS", "RISKS", "News2", "News2Error", "Risk", "news2"]

Risk = Literal["low", "low-medium", "medium", "high"]
RISKS: Final[tuple[Risk, ...]] = ("low", "low-medium", "medium", "high")  # in increasing order

PARAMETERS: Final = ("resp_rate", "spo2", "air_or_oxygen", "systolic_bp", "pulse",
                     "consciousness", "temperature")

CONSCIOUSNESS: Final = frozenset("ACVPU")

RESPONSES: Final[dict[str, str]] = {
    "routine": "routine monitoring (minimum 12-hourly)",
    "low": "registered nurse assessment; ward-based response (minimum 4-6-hourly)",
    "low-medium": "urgent ward-based review by a clinician (minimum hourly)",
    "medium": "urgent response: key threshold reached (minimum hourly)",
    "high": "emergency response: continuous monitoring",
}


class News2Error(ValueError):
    """Input no patient could have produced; the message says which and why."""


@dataclass(frozen=True, slots=True)
class News2:
    total: int
    scores: Mapping[str, int]  # per parameter that was measured, in PARAMETERS order
    risk: Risk
    response: str
    missing: tuple[str, ...] = ()  # parameters not measured (they score nothing)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def any_single_three(self) -> bool:
        return any(s == 3 for s in self.scores.values())


def _number(name: str, value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise News2Error(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise News2Error(f"{name} {value!r} is impossible (expected {low:g}-{high:g})")
    return float(value)


def _band(value: float, uppers: tuple[tuple[float, int], ...], above: int) -> int:
    for upper, score in uppers:
        if value <= upper:
            return score
    return above


def _resp_rate(v: float) -> int:
    return _band(v, ((8, 3), (11, 1), (20, 0), (24, 2)), 3)


def _spo2_scale1(v: float) -> int:
    return _band(v, ((91, 3), (93, 2), (95, 1)), 0)


def _spo2_scale2(v: float, on_oxygen: bool | None) -> int:
    if v <= 92 or not on_oxygen:
        return _band(v, ((83, 3), (85, 2), (87, 1)), 0)
    return _band(v, ((94, 1), (96, 2)), 3)


def _systolic(v: float) -> int:
    return _band(v, ((90, 3), (100, 2), (110, 1), (219, 0)), 3)


def _pulse(v: float) -> int:
    return _band(v, ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), 3)


def _temperature(v: float) -> int:
    return _band(v, ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1)), 2)


def risk_of(total: int, any_single_three: bool) -> Risk:
    if total >= 7:
        return "high"
    if total >= 5:
        return "medium"
    if any_single_three:
        return "low-medium"
    return "low"


def news2(resp_rate: float | None, spo2: float | None, spo2_scale: int, on_oxygen: bool | None,
          systolic_bp: float | None, pulse: float | None, consciousness: str | None,
          temperature: float | None) -> News2:
    """The NEWS2 of one set of observations (see the module docstring)."""
    if spo2_scale not in (1, 2) or isinstance(spo2_scale, bool):
        raise News2Error(f"spo2_scale must be 1 or 2, got {spo2_scale!r}")
    if on_oxygen is not None and not isinstance(on_oxygen, bool):
        raise News2Error(f"on_oxygen must be True, False or None, got {on_oxygen!r}")
    if consciousness is not None and (not isinstance(consciousness, str)
                                      or consciousness not in CONSCIOUSNESS):
        raise News2Error(f"consciousness must be one of A, C, V, P, U, got {consciousness!r}")
    rr = _number("resp_rate", resp_rate, 0, 99)
    sat = _number("spo2", spo2, 0, 100)
    sbp = _number("systolic_bp", systolic_bp, 0, 300)
    hr = _number("pulse", pulse, 0, 300)
    temp = _number("temperature", temperature, 25.0, 45.0)

    found: dict[str, int | None] = {
        "resp_rate": None if rr is None else _resp_rate(rr),
        "spo2": None if sat is None else (
            _spo2_scale1(sat) if spo2_scale == 1 else _spo2_scale2(sat, on_oxygen)),
        "air_or_oxygen": None if on_oxygen is None else (2 if on_oxygen else 0),
        "systolic_bp": None if sbp is None else _systolic(sbp),
        "pulse": None if hr is None else _pulse(hr),
        "consciousness": None if consciousness is None else (0 if consciousness == "A" else 3),
        "temperature": None if temp is None else _temperature(temp),
    }
    scores = {k: v for k, v in found.items() if v is not None}
    missing = tuple(k for k, v in found.items() if v is None)
    total = sum(scores.values())
    three = any(s == 3 for s in scores.values())
    risk = risk_of(total, three)
    response = RESPONSES["routine"] if total == 0 else RESPONSES[risk]
    return News2(total, scores, risk, response, missing)
