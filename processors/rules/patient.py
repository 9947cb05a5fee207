"""The patient rules: one state machine per patient, fed with ``vitals`` events and a clock.

``PatientMonitor(patient, rules).on_event(event)`` and ``.tick(now_ms)`` return the
alert changes (``Alert``: fired, updated, resolved; see ``alerts``). No I/O, no clock
of its own: event time comes from the events, wall-clock time from ``tick``.

The rules
=========

``news2`` (fingerprint ``news2|<patient>``)
    NEWS2 from the latest value of each parameter seen within ``news2_max_age_s``
    (1800 s by default: a blood pressure is measured far less often than a
    saturation). The alert fires when the risk reaches ``news2_alert_from``
    (``low-medium`` by default: a single 3, the RCP's first urgent response), is
    updated while the score or the risk changes, and resolves when the risk falls
    back below it. Severity: low → info, low-medium → minor, medium → major,
    high → critical. Missing parameters score nothing (see ``processors.news2``),
    so the risk is a lower bound and the details name what is missing.

``threshold:<name>`` (``DEFAULT_THRESHOLDS``, configurable)
    A vital sign beyond a limit for ``delay_s``, resolved only once it is back past
    a second limit (hysteresis) for ``clear_delay_s``: SpO2 below 90 % for 15 s
    fires and resolves only above 92 % for 15 s. The alert is updated when the
    worst value seen gets worse. A value not measured (probe off, empty field)
    neither fires nor clears: it restarts a pending delay and leaves an active
    alarm as it is (the technical alarm says why the value is missing).

``probe_off`` (technical)
    The pulse-oximeter probe reported off for ``probe_off_delay_s`` (10 s; a probe
    being repositioned is not an alarm); resolved as soon as it is back on.

``no_data`` (technical)
    No vitals event for ``no_data_s`` (60 s) by the clock given to ``tick``;
    resolved by the next vitals event. A patient never heard from has no alarm.

Events are taken in order; one older than the newest event seen (a device clock
stepped back) is counted in ``stale`` and ignored. Values that are not finite
numbers are treated as not measured; a set of values NEWS2 refuses as impossible is
counted in ``invalid`` and leaves the NEWS2 alert as it was.

Checkpoints and the live view
=============================

``snapshot()`` is the monitor's whole state as plain JSON data (no rules: they come
from the configuration at ``PatientMonitor.restore(patient, rules, state)``, which
raises ``ValueError`` for a malformed snapshot). A restored monitor carries on
exactly as the one that was snapshotted would have. When the rules changed in
between, the state of a threshold that is gone, or that now watches another
parameter or direction, is dropped quietly (a threshold of that name starts afresh),
and its active ``threshold:<name>`` alert is resolved, with the message "<rule> is no
longer configured", by the first ``on_event`` or ``tick`` after the restore, so no
alert stays active downstream with nothing left to end it. Changed limits and delays
apply from the restore on, to the timers already running.

``latest()`` is what the device-state topic shows of the patient now: the last value
measured of each vital sign (whether or not NEWS2 could use it, however old), the
last oxygen and AVPU seen, and whether the probe is off; while it is off, SpO2 and
heart rate are None (the values from before are not the patient's now).
``news2_json()`` is the latest NEWS2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from edge.wire import Event
from processors.news2 import PARAMETERS, RISKS, News2, News2Error, Risk, news2
from processors.rules._snapshot import Fields, check_header, header
from processors.rules._values import finite_number as _number
from processors.rules._values import ms as _ms
from processors.rules.alerts import SEVERITIES, Alert, AlertBook, Severity, Sustained

__all__ = ["DEFAULT_THRESHOLDS", "PatientMonitor", "PatientRules", "Threshold"]

NEWS2_SEVERITY: Final[dict[Risk, Severity]] = {
    "low": "info", "low-medium": "minor", "medium": "major", "high": "critical"}

# vitals data keys (edge/sensors/vitals.py) -> NEWS2 parameters
_NUMERIC: Final = ("heart_rate", "spo2", "resp_rate", "temp_c", "sys_bp", "dia_bp")
_AVPU: Final = frozenset("ACVPU")
_FIXED_RULES: Final = ("news2", "probe_off", "no_data")


@dataclass(frozen=True, slots=True)
class Threshold:
    """``parameter`` (a vitals data key) ``below`` or ``above`` ``fire`` for ``delay_s``
    fires; back past ``clear`` (the other side of ``fire``) for ``clear_delay_s`` resolves."""

    name: str
    parameter: str
    direction: Literal["below", "above"]
    fire: float
    clear: float
    delay_s: float = 15.0
    clear_delay_s: float = 15.0
    severity: Severity = "major"

    def __post_init__(self) -> None:
        if self.direction not in ("below", "above"):
            raise ValueError(f"{self.name}: direction must be below or above, got {self.direction!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.name}: severity must be one of {', '.join(SEVERITIES)}")
        if self.direction == "below" and self.clear < self.fire:
            raise ValueError(f"{self.name}: clear {self.clear} must not be below fire {self.fire}")
        if self.direction == "above" and self.clear > self.fire:
            raise ValueError(f"{self.name}: clear {self.clear} must not be above fire {self.fire}")
        if self.delay_s < 0 or self.clear_delay_s < 0:
            raise ValueError(f"{self.name}: delays must not be negative")

    def trigger(self, v: float) -> bool:
        return v < self.fire if self.direction == "below" else v > self.fire

    def release(self, v: float) -> bool:
        return v > self.clear if self.direction == "below" else v < self.clear


DEFAULT_THRESHOLDS: Final = (
    Threshold("spo2_low", "spo2", "below", 90, 92),
    Threshold("heart_rate_high", "heart_rate", "above", 130, 120),
    Threshold("heart_rate_low", "heart_rate", "below", 40, 45),
    Threshold("resp_rate_high", "resp_rate", "above", 24, 21),
    Threshold("resp_rate_low", "resp_rate", "below", 8, 10),
)


@dataclass(frozen=True, slots=True)
class PatientRules:
    spo2_scale: int = 1  # 2 for patients with a prescribed target of 88-92 %
    news2_alert_from: Risk = "low-medium"
    news2_max_age_s: float = 1800.0
    thresholds: tuple[Threshold, ...] = DEFAULT_THRESHOLDS
    probe_off_delay_s: float = 10.0
    no_data_s: float = 60.0

    def __post_init__(self) -> None:
        if self.spo2_scale not in (1, 2):
            raise ValueError(f"spo2_scale must be 1 or 2, got {self.spo2_scale!r}")
        if self.news2_alert_from not in RISKS:
            raise ValueError(f"news2_alert_from must be one of {RISKS}")
        if len({t.name for t in self.thresholds}) != len(self.thresholds):
            raise ValueError("threshold names must be unique")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PatientRules:
        """From a TOML table: the fields above by name; ``thresholds``, when given, an
        array of tables with ``Threshold``'s fields, replacing the defaults. Unknown keys
        are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown patient rule setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(config)
        if "thresholds" in values:
            threshold_fields = {f.name for f in fields(Threshold)}
            thresholds = []
            for t in values["thresholds"]:
                extra = set(t) - threshold_fields
                if extra:
                    raise ValueError(f"unknown threshold setting(s): {', '.join(sorted(extra))}")
                thresholds.append(Threshold(**t))
            values["thresholds"] = tuple(thresholds)
        return cls(**values)


@dataclass(slots=True)
class _ThresholdState:
    sustained: Sustained
    worst: float | None = None


@dataclass(slots=True)
class _Latest:
    value: Any
    ts: int


def _restore_score(f: Fields) -> News2:
    total, risk, response = f.integer("total"), f.text("risk"), f.text("response")
    if risk not in RISKS:
        f.fail(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")
    scores = f.mapping("scores")
    if not all(k in PARAMETERS and isinstance(v, int) and not isinstance(v, bool)
               for k, v in scores.items()):
        f.fail(f"scores must map NEWS2 parameters to integers, got {scores!r}")
    missing = f.items("missing")
    if not all(k in PARAMETERS for k in missing):
        f.fail(f"missing must list NEWS2 parameters, got {missing!r}")
    f.done()
    return News2(total, scores, risk, response, tuple(missing))


def _restore_news2_values(f: Fields) -> dict[str, _Latest]:
    """The values NEWS2 uses, each with its time; refused unless NEWS2 takes them."""
    values: dict[str, _Latest] = {}
    for key in f.names():
        pair = f.raw(key)
        if key not in (*_NUMERIC, "on_oxygen", "consciousness") or not isinstance(pair, list) \
                or len(pair) != 2 or isinstance(pair[1], bool) or not isinstance(pair[1], int):
            f.fail(f"{key} must be a known vital sign with a [value, ts] pair, got {pair!r}")
        values[key] = _Latest(pair[0], pair[1])
    v = {k: x.value for k, x in values.items()}
    try:
        news2(v.get("resp_rate"), v.get("spo2"), 1, v.get("on_oxygen"), v.get("sys_bp"),
              v.get("heart_rate"), v.get("consciousness"), v.get("temp_c"))
    except News2Error as e:
        f.fail(f"values NEWS2 cannot use: {e}")
    for key in _NUMERIC:
        if key in v and _number(v[key]) is None:
            f.fail(f"{key} must be a finite number, got {v[key]!r}")
    return values


@dataclass(slots=True)
class PatientMonitor:
    patient: str
    rules: PatientRules = field(default_factory=PatientRules)
    seen: int | None = None  # when its newest event arrived, by the caller's clock
    last_ts: int | None = None  # event time of the newest vitals event
    score: News2 | None = None  # the latest NEWS2
    stale: int = 0
    invalid: int = 0
    _book: AlertBook = field(default_factory=AlertBook)
    _latest: dict[str, _Latest] = field(default_factory=dict)
    _thresholds: dict[str, _ThresholdState] = field(default_factory=dict)
    _probe: Sustained = field(default_factory=Sustained)
    _measured: dict[str, Any] = field(default_factory=dict)  # latest measured values, any age
    _probe_off: bool = False
    _retired: list[str] = field(default_factory=list)  # rules gone: resolve their alerts

    def __post_init__(self) -> None:
        self._probe = Sustained(_ms(self.rules.probe_off_delay_s), 0)
        self._thresholds = {
            t.name: _ThresholdState(Sustained(_ms(t.delay_s), _ms(t.clear_delay_s)))
            for t in self.rules.thresholds}

    def active(self) -> list[Alert]:
        return self._book.active()

    def on_event(self, event: Event, arrived: int | None = None) -> list[Alert]:
        """One event; ``arrived`` is when it reached the caller, on the clock later given
        to ``tick`` (default: its own time). Silence is counted from the later of the two,
        so a backlog of old events delivered now is not silence."""
        if event.kind != "vitals":
            return []
        ts = event.ts
        heard = ts if arrived is None or arrived < ts else arrived
        if self.seen is None or heard > self.seen:
            self.seen = heard
        if self.last_ts is not None and ts < self.last_ts:
            self.stale += 1
            return []
        self.last_ts = ts
        data = event.data
        out: list[Alert] = []
        if self._retired:
            self._resolve_retired(out, ts)
        self._emit(out, self._book.end("no_data", self.patient, ts))

        probe_off = data.get("probe_off") is True
        values: dict[str, Any] = {k: _number(data.get(k)) for k in _NUMERIC}
        if probe_off:
            values["spo2"] = values["heart_rate"] = None
        measured = self._measured
        for key, value in values.items():
            if value is not None:
                measured[key] = value
        self._probe_off = probe_off
        on_oxygen = data.get("on_oxygen")
        if isinstance(on_oxygen, bool):
            values["on_oxygen"] = measured["on_oxygen"] = on_oxygen
        else:
            values["on_oxygen"] = None
        avpu = data.get("consciousness")
        if isinstance(avpu, str):
            values["consciousness"] = avpu
            if avpu in _AVPU:
                measured["consciousness"] = avpu
        else:
            values["consciousness"] = None

        self._probe_rule(out, ts, probe_off)
        for threshold in self.rules.thresholds:
            self._threshold_rule(out, ts, threshold, values.get(threshold.parameter))
        self._news2_rule(out, ts, values)
        return out

    def tick(self, now_ms: int) -> list[Alert]:
        """Wall-clock time passed: the ``no_data`` alarm, and delayed alarms whose delay
        ran out since the last reading (the agent reports a vital sign when it changes, so
        SpO2 at 88 % may be reported once: 15 s later it still stands)."""
        out: list[Alert] = []
        if self._retired:
            self._resolve_retired(out, now_ms)
        heard = self.seen if self.seen is not None else self.last_ts
        if heard is None or self.last_ts is None:
            return out
        if now_ms - heard < _ms(self.rules.no_data_s):
            # the patient's own time: its last reading plus the time since it arrived (a
            # backlog delivered late does not age by the clock of the others)
            self._delays_due(out, self.last_ts + max(0, now_ms - heard))
            return out
        self._emit(out, self._book.hold("no_data", self.patient, now_ms, "major",
                                        f"no vitals for {self.rules.no_data_s:g} s",
                                        {"last_ts": self.last_ts, "no_data_s": self.rules.no_data_s},
                                        started=heard))
        return out

    def dormant(self) -> bool:
        """Only its next event can change this monitor (``no_data`` is active): ``tick``
        would return nothing until then, so a caller may skip it."""
        return not self._retired and self._book.get("no_data", self.patient) is not None

    def _delays_due(self, out: list[Alert], ts: int) -> None:
        """Pending delays (probe off, thresholds) fed again with the last reading at ``ts``."""
        if self.last_ts is None or ts <= self.last_ts:
            return
        if self._probe.pending_since is not None:
            self._probe_rule(out, ts, self._probe_off)
        for threshold in self.rules.thresholds:
            if self._thresholds[threshold.name].sustained.pending_since is None:
                continue
            if self._probe_off and threshold.parameter in ("spo2", "heart_rate"):
                continue
            value = self._measured.get(threshold.parameter)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._threshold_rule(out, ts, threshold, float(value))

    def latest(self) -> dict[str, Any]:
        """The patient now, for the device-state topic (see the module doc): the six
        vital signs (numbers or None), ``on_oxygen``, ``consciousness``, ``probe_off``."""
        measured, off = self._measured, self._probe_off
        return {"heart_rate": None if off else measured.get("heart_rate"),
                "spo2": None if off else measured.get("spo2"),
                "resp_rate": measured.get("resp_rate"), "temp_c": measured.get("temp_c"),
                "sys_bp": measured.get("sys_bp"), "dia_bp": measured.get("dia_bp"),
                "on_oxygen": measured.get("on_oxygen"),
                "consciousness": measured.get("consciousness"),
                "probe_off": off}

    def news2_json(self) -> dict[str, Any] | None:
        """The latest NEWS2 as ``{"total", "risk", "scores", "missing"}``, None before any."""
        score = self.score
        if score is None:
            return None
        return {"total": score.total, "risk": score.risk, "scores": dict(score.scores),
                "missing": list(score.missing)}

    # ---- checkpoints -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON data, without the rules (see the module doc)."""
        score = self.news2_json()
        if score is not None:
            assert self.score is not None
            score["response"] = self.score.response
        return {
            **header("patient", self.patient),
            "last_ts": self.last_ts,
            "seen": self.seen,
            "stale": self.stale,
            "invalid": self.invalid,
            "score": score,
            "alerts": self._book.snapshot(),
            "news2_values": {k: [v.value, v.ts] for k, v in self._latest.items()},
            "thresholds": {t.name: {"parameter": t.parameter, "direction": t.direction,
                                    "sustained": self._thresholds[t.name].sustained.snapshot(),
                                    "worst": self._thresholds[t.name].worst}
                           for t in self.rules.thresholds},
            "probe": self._probe.snapshot(),
            "measured": dict(self._measured),
            "probe_off": self._probe_off,
        }

    @classmethod
    def restore(cls, patient: str, rules: PatientRules, state: Mapping[str, Any]) -> PatientMonitor:
        """The monitor ``snapshot`` wrote, under ``rules`` (today's configuration);
        ``ValueError`` saying what is wrong if ``state`` is not such a snapshot."""
        f = check_header(state, "patient", patient)
        where = f.where
        m = cls(patient, rules)
        m.last_ts = f.opt_integer("last_ts")
        m.seen = f.opt_integer("seen") if "seen" in state else m.last_ts
        m.stale = f.integer("stale")
        m.invalid = f.integer("invalid")
        m.score = None if f.raw("score") is None else _restore_score(f.object("score"))
        m._book = AlertBook.restore(f.raw("alerts"), f"{where}: alerts")
        for alert in m._book.active():
            if alert.subject != patient:
                f.fail(f"alert {alert.fingerprint} is not about {patient!r}")
        m._latest = _restore_news2_values(f.object("news2_values"))
        saved = f.object("thresholds")
        kept: set[str] = set()
        for name in saved.names():
            t_state = saved.object(name)
            parameter, direction = t_state.text("parameter"), t_state.text("direction")
            sustained, worst = t_state.raw("sustained"), t_state.opt_number("worst")
            t_state.done()
            current = next((t for t in rules.thresholds if t.name == name), None)
            if current is None or (current.parameter, current.direction) != (parameter, direction):
                continue  # gone or now about something else: starts afresh
            m._thresholds[name] = _ThresholdState(Sustained.restore(
                _ms(current.delay_s), _ms(current.clear_delay_s), sustained,
                f"{where}: thresholds.{name}.sustained"), worst)
            kept.add(name)
        m._probe = Sustained.restore(_ms(rules.probe_off_delay_s), 0, f.raw("probe"),
                                     f"{where}: probe")
        measured = f.object("measured")
        for key in measured.names():
            if key in _NUMERIC:
                m._measured[key] = measured.number(key)
            elif key == "on_oxygen":
                m._measured[key] = measured.flag(key)
            elif key == "consciousness" and measured.text(key) in _AVPU:
                m._measured[key] = measured.text(key)
            else:
                measured.fail(f"unknown or impossible value {key}={measured.raw(key)!r}")
        m._probe_off = f.flag("probe_off")
        f.done()
        raised = {*_FIXED_RULES, *(f"threshold:{name}" for name in kept)}
        m._retired = [a.rule for a in m._book.active() if a.rule not in raised]
        return m

    def _resolve_retired(self, out: list[Alert], ts: int) -> None:
        for rule in self._retired:
            self._emit(out, self._book.end(rule, self.patient, ts, f"{rule} is no longer configured"))
        self._retired = []

    # ---- the rules -------------------------------------------------------------------

    @staticmethod
    def _emit(out: list[Alert], alert: Alert | None) -> None:
        if alert is not None:
            out.append(alert)

    def _probe_rule(self, out: list[Alert], ts: int, probe_off: bool) -> None:
        if self._probe.feed(ts, probe_off, not probe_off):
            since = self._probe.since if self._probe.since is not None else ts
            self._emit(out, self._book.hold("probe_off", self.patient, ts, "minor",
                                            "SpO2 probe off", started=since))
        else:
            self._emit(out, self._book.end("probe_off", self.patient, ts, "SpO2 probe back on"))

    def _threshold_rule(self, out: list[Alert], ts: int, t: Threshold, value: float | None) -> None:
        state = self._thresholds[t.name]
        was = state.sustained.active
        now = state.sustained.feed(ts, value is not None and t.trigger(value),
                                   value is not None and t.release(value))
        rule = f"threshold:{t.name}"
        if now:
            worse = value is not None and (state.worst is None or (
                value < state.worst if t.direction == "below" else value > state.worst))
            if not was or (worse and value is not None and t.trigger(value)):
                state.worst = value
            since = state.sustained.since if state.sustained.since is not None else ts
            self._emit(out, self._book.hold(
                rule, self.patient, ts, t.severity,
                f"{t.parameter} {t.direction} {t.fire:g} for {t.delay_s:g} s",
                {"parameter": t.parameter, "fire": t.fire, "clear": t.clear, "worst": state.worst},
                started=since))
        elif was:
            state.worst = None
            self._emit(out, self._book.end(rule, self.patient, ts,
                                           f"{t.parameter} back past {t.clear:g}",
                                           {"value": value}))

    def _news2_rule(self, out: list[Alert], ts: int, values: dict[str, Any]) -> None:
        candidate = dict(self._latest)
        for key in (*_NUMERIC, "on_oxygen", "consciousness"):
            if values.get(key) is not None:
                candidate[key] = _Latest(values[key], ts)
        horizon = ts - _ms(self.rules.news2_max_age_s)
        latest = {k: v.value for k, v in candidate.items() if v.ts >= horizon}
        try:
            score = news2(latest.get("resp_rate"), latest.get("spo2"), self.rules.spo2_scale,
                          latest.get("on_oxygen"), latest.get("sys_bp"), latest.get("heart_rate"),
                          latest.get("consciousness"), latest.get("temp_c"))
        except News2Error:  # an impossible value: keep the previous ones
            self.invalid += 1
            return
        self._latest = candidate
        self.score = score
        if RISKS.index(score.risk) >= RISKS.index(self.rules.news2_alert_from):
            self._emit(out, self._book.hold(
                "news2", self.patient, ts, NEWS2_SEVERITY[score.risk],
                f"NEWS2 {score.total} ({score.risk}): {score.response}",
                {"total": score.total, "risk": score.risk, "scores": dict(score.scores),
                 "missing": list(score.missing)}))
        else:
            self._emit(out, self._book.end("news2", self.patient, ts,
                                           f"NEWS2 {score.total} ({score.risk})",
                                           {"total": score.total, "risk": score.risk}))
