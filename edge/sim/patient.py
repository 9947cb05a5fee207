"""Simulated patients: vital signs that drift, and sometimes deteriorate.

A ``PatientModel`` holds a patient's true physiology and advances it with ``step(dt)``;
``observe()`` gives what the bedside monitor measures (``edge.sensors.vitals.Vitals``,
rounded as a monitor would). Seeded: the same seed gives the same patient.

Profiles:

* ``stable``: every sign wanders around the patient's own baseline (an
  Ornstein-Uhlenbeck walk: noisy, but pulled back).
* ``deteriorating``: after an onset of 2-8 minutes, over 15-30 minutes, the picture of
  sepsis that NEWS2 is built to catch: respiratory rate 16 -> 29, heart rate -> 128,
  SpO2 97 -> 88 %, temperature -> 39.2 °C, systolic pressure -> 88 mmHg, and new
  confusion (ACVPU ``C``) near the end. When SpO2 drops below 92 % the nurse puts the
  patient on oxygen, which buys back 3 points of SpO2.

Either profile may lose its finger probe now and then (10-90 s of ``probe=off``), and
the patient may press the nurse-call button (more often when unwell).

Scripted incidents (``edge.sim.incidents``; ``PatientModel.create(..., incidents=...)``)
come on top of either profile: during a ``deteriorating`` episode the signs follow
straight lines to ``SCRIPTED_DETERIORATION`` (SpO2 ~86 % by 40 % of the episode,
respiratory rate ~26/min by 70 %, heart rate ~115 at its end); the nurse puts the
patient on oxygen as usual. When the episode is over the signs go back to the baseline
in straight lines over ``RECOVERY_S``, and the oxygen comes off once SpO2 is back
within a point of where it was on air. During a ``probe_off`` episode the finger probe
is off, and the patient, restless, breathes faster (towards ``RESTLESS_RR``, slowly).

Why lines and restlessness, not jumps: an agent reports a vital sign when it moved past
a deadband (``edge.sampling``), and the rules judge a condition by the events they get
("below 90 % for 15 s" needs a reading 15 s after the first low one), so a scripted
picture that stood still would reach them as one reading and never sustain. Signs that
keep moving keep the readings coming.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge.sensors.vitals import Vitals
from edge.sim.incidents import Incident, active, episode_end

__all__ = ["RECOVERY_S", "RESTLESS_RR", "SCRIPTED_DETERIORATION", "SCRIPTED_PULL", "PatientModel"]

# sign -> (where a scripted deterioration takes it, the share of the episode it takes to get there)
SCRIPTED_DETERIORATION = {"spo2": (86.0, 0.4), "rr": (26.0, 0.7), "hr": (115.0, 1.0)}
RECOVERY_S = 30.0  # back to the baseline after a scripted deterioration
SCRIPTED_PULL = 0.15  # per second: how closely the signs follow the scripted lines
RESTLESS_RR = 24.0  # breaths/min while the probe is scripted off: 17 after ~5 s, 19 after ~12, 21 after ~21
RESTLESS_PULL = 0.05


@dataclass(slots=True)
class _Sign:
    value: float
    baseline: float
    worst: float  # where deterioration takes it
    noise: float  # standard deviation of the walk, per sqrt(second)
    pull: float = 0.02  # how fast it returns to its mean, per second

    def step(self, rng: random.Random, dt: float, progress: float, towards: float | None = None,
             pull: float | None = None) -> None:
        """Walk ``dt`` seconds; ``towards`` (at ``pull``) overrides the mean, as a script does."""
        mean = self.baseline + (self.worst - self.baseline) * progress if towards is None else towards
        pull = self.pull if pull is None else pull
        self.value += (mean - self.value) * min(1.0, pull * dt) + rng.gauss(0.0, self.noise * dt ** 0.5)


@dataclass
class PatientModel:
    rng: random.Random
    profile: str  # "stable" or "deteriorating"
    signs: dict[str, _Sign]
    onset: float = 0.0
    duration: float = 1.0
    t: float = 0.0
    on_oxygen: bool = False
    probe_off_until: float = -1.0
    call_until: float = -1.0
    log: list[tuple[float, str]] = field(default_factory=list)
    incidents: tuple[Incident, ...] = ()  # scripted (edge.sim.incidents), on top of the profile
    _lines: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # scripted: from, to, over s
    _lines_from: float = 0.0  # when the scripted lines began
    _scripted_oxygen: bool = False  # oxygen was put on during a scripted deterioration
    _deteriorating: bool = False

    @classmethod
    def create(cls, index: int, seed: int, profile: str | None = None,
               incidents: tuple[Incident, ...] = ()) -> PatientModel:
        rng = random.Random(f"patient:{seed}:{index}")
        if profile is None:
            profile = "deteriorating" if index % 3 == 1 else "stable"
        hr, rr = rng.uniform(64, 86), rng.uniform(13, 17)
        spo2, temp = rng.uniform(95.5, 98.5), rng.uniform(36.5, 37.2)
        sys = rng.uniform(112, 138)
        signs = {
            "hr": _Sign(hr, hr, 128.0, 0.6),
            "rr": _Sign(rr, rr, 29.0, 0.15),
            "spo2": _Sign(spo2, spo2, 88.0, 0.2),
            "temp": _Sign(temp, temp, 39.2, 0.01, pull=0.005),
            "sys": _Sign(sys, sys, 88.0, 0.8),
            "dia": _Sign(sys * 0.62, sys * 0.62, 50.0, 0.5),
        }
        return cls(rng, profile, signs, onset=rng.uniform(120, 480), duration=rng.uniform(900, 1800),
                   incidents=incidents)

    @property
    def progress(self) -> float:
        if self.profile != "deteriorating":
            return 0.0
        return max(0.0, min(1.0, (self.t - self.onset) / self.duration))

    def _event(self, what: str) -> None:
        self.log.append((round(self.t, 1), what))

    def step(self, dt: float) -> None:
        while dt > 1e-9:
            h = min(dt, 1.0)
            self._substep(h)
            dt -= h

    def _script(self) -> tuple[bool, bool]:
        """Apply the scripted incidents at ``t``: whether a deterioration is under way, and
        whether the probe is scripted off."""
        t = self.t
        worse = restless = False
        for incident in self.incidents:
            if not active(incident, t):
                continue
            if incident.kind == "deteriorating":
                worse = True
                if not self._deteriorating:
                    self._event("scripted: deteriorating")
                    length = episode_end(incident, t) - t
                    self._lines = {name: (self.signs[name].value, to, share * length)
                                   for name, (to, share) in SCRIPTED_DETERIORATION.items()}
                    self._lines_from = t
            elif incident.kind == "probe_off":
                restless = True
                if not self.probe_off:
                    self.probe_off_until = episode_end(incident, t)
                    self._event("scripted: probe off")
        if self._deteriorating and not worse:
            self._event("scripted: recovering")
            air = 3.0 if self._scripted_oxygen else 0.0  # the oxygen comes off on the way
            self._lines = {name: (self.signs[name].value, self._mean(name) - (air if name == "spo2" else 0.0),
                                  RECOVERY_S) for name in SCRIPTED_DETERIORATION}
            self._lines_from = t
        elif not worse and self._lines and t - self._lines_from > RECOVERY_S:
            self._lines = {}
        self._deteriorating = worse
        spo2 = self.signs["spo2"]
        if self._scripted_oxygen and not worse and spo2.value >= spo2.baseline - 4.0:
            self._take_off_oxygen()  # back to what it was on air
        return worse, restless

    def _mean(self, name: str) -> float:
        sign = self.signs[name]
        return sign.baseline + (sign.worst - sign.baseline) * self.progress

    def _on_line(self, name: str) -> float | None:
        """Where the scripted line of a sign is now (None: it has none)."""
        if name not in self._lines:
            return None
        start, end, over = self._lines[name]
        return start + (end - start) * min(1.0, (self.t - self._lines_from) / max(over, 1e-9))

    def _take_off_oxygen(self) -> None:
        self.on_oxygen = self._scripted_oxygen = False
        self.signs["spo2"].baseline -= 3.0
        self.signs["spo2"].worst -= 3.0
        self._event("off oxygen")

    def _substep(self, h: float) -> None:
        self.t += h
        rng, p = self.rng, self.progress
        worse, restless = self._script() if self.incidents else (False, False)
        for name, sign in self.signs.items():
            line = self._on_line(name)
            if line is not None:
                sign.step(rng, h, p, line, SCRIPTED_PULL)
            elif restless and name == "rr":
                sign.step(rng, h, p, max(RESTLESS_RR, sign.value), RESTLESS_PULL)
            else:
                sign.step(rng, h, p)
        if not self.on_oxygen and self.signs["spo2"].value < 91.5:
            self.on_oxygen = True
            self._scripted_oxygen = worse
            self.signs["spo2"].baseline += 3.0
            self.signs["spo2"].worst += 3.0
            self._event("put on oxygen")
        if self.t >= self.probe_off_until and rng.random() < h / 900:
            self.probe_off_until = self.t + rng.uniform(10, 90)
            self._event("probe off")
        if self.t >= self.call_until and rng.random() < h * (1 / 2400 + p / 600):
            self.call_until = self.t + rng.uniform(0.5, 2.0)
            self._event("nurse call")

    @property
    def probe_off(self) -> bool:
        return self.t < self.probe_off_until

    @property
    def calling(self) -> bool:
        return self.t < self.call_until

    def observe(self) -> Vitals:
        s = {k: v.value for k, v in self.signs.items()}
        confused = self.progress > 0.8
        off = self.probe_off
        return Vitals(
            heart_rate=None if off else max(0, min(300, round(s["hr"]))),
            spo2=None if off else max(0, min(100, round(s["spo2"]))),
            resp_rate=max(0, min(99, round(s["rr"]))),
            temp_c=round(max(25.0, min(45.0, s["temp"])), 1),
            sys_bp=max(0, min(300, round(s["sys"]))),
            dia_bp=max(0, min(300, round(s["dia"]))),
            on_oxygen=self.on_oxygen,
            consciousness="C" if confused else "A",
            probe_off=off,
        )
