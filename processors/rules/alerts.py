"""The alert model the rules share: one alert per condition, fired, updated, resolved.

Alarm fatigue is the enemy, so a rule never raises an alert per event. It says, event
by event, whether its condition holds (``AlertBook.hold``) or not (``AlertBook.end``),
and the book turns that into at most one message per change:

* ``fired``: the condition began (the first ``hold`` of a fingerprint not active);
* ``updated``: it still holds but what the alert says changed (severity, message or
  details): a repeated ``hold`` with the same content says nothing;
* ``resolved``: it ended (``end`` of an active fingerprint; ``end`` of one not active
  says nothing).

The fingerprint is the rule and the subject (``"overspeed|truck-7"``,
``"geofence:depot|truck-7"``): stable, so a replay of the same events updates the
alert downstream instead of raising it twice. Time is the caller's (event time in ms
since the epoch), never read from a clock.

``Sustained`` is the delay-and-hysteresis primitive of threshold alarms: a condition
becomes active after its trigger held for ``on_delay_ms`` and inactive after its
release held for ``off_delay_ms``; between the two (a value in the hysteresis band,
or a value not known) nothing changes and any pending timer restarts.

Checkpoints: ``Alert.to_json``/``Alert.from_json``, ``AlertBook.snapshot``/``restore``
and ``Sustained.snapshot``/``restore`` write and read plain JSON data (see
``_snapshot``); a ``Sustained``'s delays are configuration, not state, and are given
again at restore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from processors.rules._snapshot import Fields, plain, unplain

__all__ = ["SEVERITIES", "Alert", "AlertBook", "AlertState", "Severity", "Sustained", "fingerprint"]

Severity = Literal["info", "minor", "major", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "minor", "major", "critical")  # increasing


class AlertState(StrEnum):
    FIRED = "fired"
    UPDATED = "updated"
    RESOLVED = "resolved"


def fingerprint(rule: str, subject: str) -> str:
    return f"{rule}|{subject}"


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str  # "overspeed", "news2", "threshold:spo2_low", "geofence:depot", ...
    subject: str  # the device (vehicle or patient) it is about
    state: AlertState
    severity: Severity
    ts: int  # ms: when this change happened (event time)
    started: int  # ms: when the condition began
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    revision: int = 0  # 0 when fired, +1 per update and at resolution

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.subject)

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "rule": self.rule, "subject": self.subject,
                "state": self.state.value, "severity": self.severity, "ts": self.ts,
                "started": self.started, "message": self.message, "details": dict(self.details),
                "revision": self.revision}

    @classmethod
    def from_json(cls, data: Any, where: str = "alert") -> Alert:
        """The alert ``to_json`` wrote; ``ValueError`` naming the field if it is not one."""
        f = Fields(data, where)
        rule, subject = f.text("rule"), f.text("subject")
        if f.text("fingerprint") != fingerprint(rule, subject):
            f.fail(f"fingerprint {f.raw('fingerprint')!r} is not {fingerprint(rule, subject)!r}")
        state = f.text("state")
        if state not in {s.value for s in AlertState}:
            f.fail(f"state must be fired, updated or resolved, got {state!r}")
        severity = f.text("severity")
        if severity not in SEVERITIES:
            f.fail(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        alert = cls(rule, subject, AlertState(state), severity, f.integer("ts"),
                    f.integer("started"), f.text("message"), f.mapping("details"),
                    f.integer("revision"))
        f.done()
        return alert


class AlertBook:
    """The active alerts of one subject (or many), keyed by fingerprint."""

    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}

    def active(self) -> list[Alert]:
        return list(self._active.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """The active alerts, in the order ``active`` gives, as JSON data (non-finite
        floats in details tagged, see ``_snapshot.plain``)."""
        return [plain(a.to_json()) for a in self._active.values()]

    @classmethod
    def restore(cls, alerts: Any, where: str = "alert book") -> AlertBook:
        """The book ``snapshot`` wrote; ``ValueError`` if ``alerts`` is not one."""
        if not isinstance(alerts, list):
            raise ValueError(f"malformed {where}: expected a list of alerts, "
                             f"got {type(alerts).__name__}")
        book = cls()
        for i, data in enumerate(alerts):
            at = f"{where}[{i}]"
            alert = Alert.from_json(unplain(data, at), at)
            if alert.state is AlertState.RESOLVED:
                raise ValueError(f"malformed {at}: a resolved alert is not active")
            if alert.fingerprint in book._active:
                raise ValueError(f"malformed {at}: {alert.fingerprint} is there twice")
            book._active[alert.fingerprint] = alert
        return book

    def remove(self, rule: str, subject: str) -> Alert | None:
        """Take an active alert out of the book without resolving it."""
        return self._active.pop(fingerprint(rule, subject), None)

    def get(self, rule: str, subject: str) -> Alert | None:
        return self._active.get(fingerprint(rule, subject))

    def hold(self, rule: str, subject: str, ts: int, severity: Severity, message: str,
             details: Mapping[str, Any] | None = None, *, started: int | None = None) -> Alert | None:
        """The condition holds at ``ts``: ``fired`` if new, ``updated`` if it now says
        something else, otherwise ``None``. ``started`` backdates a new alert to when the
        condition began (a delayed alarm began when its trigger first held)."""
        key = fingerprint(rule, subject)
        details = dict(details or {})
        current = self._active.get(key)
        if current is None:
            alert = Alert(rule, subject, AlertState.FIRED, severity, ts,
                          ts if started is None else started, message, details)
        elif (current.severity, current.message, dict(current.details)) != (severity, message, details):
            alert = replace(current, state=AlertState.UPDATED, severity=severity, ts=ts,
                            message=message, details=details, revision=current.revision + 1)
        else:
            return None
        self._active[key] = alert
        return alert

    def end(self, rule: str, subject: str, ts: int, message: str | None = None,
            details: Mapping[str, Any] | None = None) -> Alert | None:
        """The condition ended at ``ts``: ``resolved`` if it was active, else ``None``."""
        if not self._active:  # the usual case, on every event: nothing to end
            return None
        current = self._active.pop(fingerprint(rule, subject), None)
        if current is None:
            return None
        return replace(current, state=AlertState.RESOLVED, ts=ts,
                       message=current.message if message is None else message,
                       details={**current.details, **(details or {})},
                       revision=current.revision + 1)


@dataclass(slots=True)
class Sustained:
    """Delay and hysteresis: ``feed(ts, trigger, release)`` says whether the condition is
    active. ``trigger`` is True when the raw value crosses the firing side (SpO2 < 90),
    ``release`` when it is on the clearing side (SpO2 > 92); both False: the hysteresis
    band or an unknown value, which keeps the state and restarts any pending timer."""

    on_delay_ms: int = 0
    off_delay_ms: int = 0
    active: bool = False
    since: int | None = None  # when the trigger began, while active: when the alarm began
    _pending: int | None = None  # when the pending change's condition began

    def feed(self, ts: int, trigger: bool, release: bool) -> bool:
        if trigger and release:
            raise ValueError("a value cannot both trigger and release a condition")
        moving = release if self.active else trigger
        if not moving:  # staying put (or in the band, or unknown): nothing pending
            self._pending = None
            return self.active
        if self._pending is None:
            self._pending = ts
        delay = self.on_delay_ms if not self.active else self.off_delay_ms
        if ts - self._pending >= delay:
            self.active = not self.active
            self.since = self._pending if self.active else None
            self._pending = None
        return self.active

    @property
    def pending_since(self) -> int | None:
        return self._pending

    def snapshot(self) -> dict[str, Any]:
        return {"active": self.active, "since": self.since, "pending": self._pending}

    @classmethod
    def restore(cls, on_delay_ms: int, off_delay_ms: int, state: Any,
                where: str = "sustained state") -> Sustained:
        """A ``Sustained`` with these delays (the configuration's, which may have changed
        since) in the state ``snapshot`` wrote."""
        f = Fields(state, where)
        sustained = cls(on_delay_ms, off_delay_ms, f.flag("active"), f.opt_integer("since"),
                        f.opt_integer("pending"))
        f.done()
        return sustained

    def reset(self) -> None:
        self.active = False
        self.since = None
        self._pending = None
