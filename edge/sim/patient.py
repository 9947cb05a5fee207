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
come on top of either profile: during a ``deteriorating`` episode the signs head for
``SCRIPTED_DETERIORATION`` (SpO2 ~86 %, respiratory rate ~26/min, heart rate ~115),
fast (``SCRIPTED_PULL``); the nurse puts the patient on oxygen as usual. When the
episode is over the signs head back to the baseline, as fast, and the oxygen comes off
once SpO2 is back where it was on air. During a
``probe_off`` episode the finger probe is off, and the patient, restless, breathes
faster (towards ``RESTLESS_RR``, slowly): what the monitor sends keeps changing, so an
agent that reports changes (``edge.sampling``) keeps reporting the probe off, and the
rules see it off for long enough.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edge.sensors.vitals import Vitals
from edge.sim.incidents import Incident, active, episode_end

__all__ = ["RESTLESS_RR", "SCRIPTED_DETERIORATION", "SCRIPTED_PULL", "PatientModel"]

SCRIPTED_DETERIORATION = {"spo2": 86.0, "rr": 26.0, "hr": 115.0}
SCRIPTED_PULL = 0.15  # per second: most of the way there in 15 s
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
    recovering_until: float = -1.0  # after a scripted deterioration: back to the baseline, fast
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
            elif incident.kind == "probe_off":
                restless = True
                if not self.probe_off:
                    self.probe_off_until = episode_end(incident, t)
                    self._event("scripted: probe off")
        if worse and not self._deteriorating:
            self._event("scripted: deteriorating")
        elif self._deteriorating and not worse:
            self._event("scripted: recovering")
            self.recovering_until = t + 60.0
        self._deteriorating = worse
        spo2 = self.signs["spo2"]
        if self._scripted_oxygen and not worse and spo2.value >= spo2.baseline - 3.0:
            self._take_off_oxygen()  # back to what it was on air
        return worse, restless

    def _take_off_oxygen(self) -> None:
        self.on_oxygen = self._scripted_oxygen = False
        self.signs["spo2"].baseline -= 3.0
        self.signs["spo2"].worst -= 3.0
        self._event("off oxygen")

    def _substep(self, h: float) -> None:
        self.t += h
        rng, p = self.rng, self.progress
        worse, restless = self._script() if self.incidents else (False, False)
        fast = worse or self.t < self.recovering_until
        for name, sign in self.signs.items():
            if worse and name in SCRIPTED_DETERIORATION:
                sign.step(rng, h, p, SCRIPTED_DETERIORATION[name], SCRIPTED_PULL)
            elif restless and name == "rr" and not worse:
                sign.step(rng, h, p, max(RESTLESS_RR, sign.value), RESTLESS_PULL)
            else:
                sign.step(rng, h, p, None, SCRIPTED_PULL if fast and name in SCRIPTED_DETERIORATION else None)
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
