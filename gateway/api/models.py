"""The API's request and response bodies (pydantic), and their conversion from store rows.

Every timestamp is a timezone-aware UTC datetime (ISO 8601 with ``Z``); the store keeps
milliseconds since the epoch.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)

from gateway.store import silence_matches

__all__ = [
    "AckRequest",
    "Alert",
    "AlertDetail",
    "AlertPage",
    "BulkAckRequest",
    "BulkAckResult",
    "ChangeEvent",
    "Device",
    "DevicePage",
    "ErrorBody",
    "ErrorInfo",
    "Health",
    "HistoryEntry",
    "IsoTime",
    "Silence",
    "SilenceCreate",
    "alert_model",
    "device_model",
    "history_model",
    "ms_to_dt",
    "silence_model",
]

def _iso_text(v: Any) -> Any:
    """Only ISO 8601 text (pydantic would also take a number of seconds)."""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str) or not _ISO.match(v):
        raise ValueError("expected an ISO 8601 date-time with a timezone, e.g. 2026-11-25T14:00:00Z")
    return v


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")

IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
"""A timezone-aware ISO 8601 time; naive times and numbers are refused."""

def _json_int(v: Any) -> Any:
    """A JSON integer (137 or 137.0), not a string or a boolean."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("expected a JSON integer")
    return v


Status = Literal["firing", "acknowledged", "resolved"]
Severity = Literal["info", "minor", "major", "critical"]
DeviceKind = Literal["vehicle", "patient"]


def ms_to_dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: unauthorized, forbidden, not_found, "
                                  "invalid_request, invalid_cursor, conflict, unavailable, internal")
    message: str = Field(description="what went wrong, for a human")
    details: Any = Field(default=None, description="more, when there is more (validation errors)")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorInfo


class Acknowledgement(BaseModel):
    by: str
    at: datetime
    comment: str | None = None


class Resolution(BaseModel):
    at: datetime
    by: str | None = Field(None, description="who resolved it by hand; null when the processors did")
    comment: str | None = None


class Alert(BaseModel):
    id: str = Field(description="stable id (derived from the fingerprint)")
    fingerprint: str = Field(description="rule|device: one condition of one device")
    rule: str
    device: str
    device_kind: DeviceKind
    state: Status
    severity: Severity
    message: str
    details: dict[str, Any]
    revision: int = Field(description="0 when fired, +1 per update and at resolution")
    started_at: datetime = Field(description="when the condition began (this episode)")
    last_transition_at: datetime = Field(description="event time of the latest transition from the processors")
    last_change_at: datetime = Field(description="the latest change of any kind (the list's order)")
    acknowledged: Acknowledgement | None = None
    resolved: Resolution | None = None
    silenced: bool = Field(description="an active silence matches it (no webhook notifications)")
    silence_id: str | None = None


class HistoryEntry(BaseModel):
    change: int = Field(description="the store's change number (the SSE event id)")
    kind: Literal["fired", "updated", "resolved", "acknowledged", "unacknowledged",
                  "resolved_manually", "silenced", "unsilenced"]
    source: Literal["log", "api", "escalation"]
    at: datetime
    started_at: datetime | None = None
    revision: int | None = None
    actor: str | None = None
    comment: str | None = None
    severity: Severity
    state: Status
    message: str


class AlertDetail(Alert):
    history: list[HistoryEntry]


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(None, max_length=200, description="who (default: the token's name)")
    comment: str | None = Field(None, max_length=2000)


class BulkAckRequest(AckRequest):
    severity: list[Severity] = Field(default_factory=list)
    rule: list[str] = Field(default_factory=list, description="names or globs")
    device: list[str] = Field(default_factory=list, description="ids or globs")
    device_kind: list[DeviceKind] = Field(default_factory=list)
    since: IsoTime | None = None
    until: IsoTime | None = None
    all: StrictBool = Field(False, description="must be true to acknowledge every firing alert (no filter)")


class BulkAckResult(BaseModel):
    acknowledged: int
    ids: list[str]


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: str = Field("*", min_length=1, max_length=200, description="rule name or glob")
    device: str = Field("*", min_length=1, max_length=200, description="device id or glob")
    starts_at: IsoTime | None = Field(None, description="default: now")
    ends_at: IsoTime | None = Field(None, description="give ends_at or duration_s")
    duration_s: int | None = Field(None, ge=1, le=366 * 86400,
                                   description="seconds from starts_at (instead of ends_at)")
    comment: str | None = Field(None, max_length=2000)
    by: str | None = Field(None, max_length=200)

    @field_validator("duration_s", mode="before")
    @classmethod
    def _json_duration(cls, v: Any) -> Any:
        return v if v is None else _json_int(v)


class Silence(BaseModel):
    id: str
    rule: str
    device: str
    starts_at: datetime
    ends_at: datetime
    active: bool
    created_by: str | None
    created_at: datetime
    comment: str | None


class Position(BaseModel):
    lat: float | None = None
    lon: float | None = None
    speed: float | None = Field(None, description="m/s")
    ignition: bool | None = None


class Device(BaseModel):
    id: str
    kind: DeviceKind | None
    status: Literal["online", "offline", "unknown"] = Field(description="from the agent's MQTT status")
    last_seen: datetime | None
    version: str | None = None
    outbox_depth: int | None = None
    outbox_bytes: int | None = None
    dropped: int | None = None
    position: Position | None = Field(None, description="vehicles: the latest position")
    vitals: dict[str, Any] | None = Field(None, description="patients: the latest vital signs")
    news2: dict[str, Any] | None = None
    window: dict[str, Any] | None = Field(None, description="the last closed aggregation window")
    active_alerts: list[str] = Field(default_factory=list, description="fingerprints")
    state_at: datetime | None = None
    status_at: datetime | None = None


class DevicePage(BaseModel):
    items: list[Device]
    next_cursor: str | None


class ChangeEvent(BaseModel):
    """The data of one SSE event (its id is ``change``)."""

    change: int
    kind: str
    at: datetime
    actor: str | None = None
    comment: str | None = None
    alert: Alert


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: bool
    store_running: bool | None = Field(description="null when this process runs no consumer")
    store_lag: int | None = Field(description="records in the log not yet in the store (sum over partitions)")
    store_error: str | None = Field(None, description="the consumer's last error since its last write")
    last_change: int


# --- conversions ------------------------------------------------------------------------


def alert_model(row: dict[str, Any], active_silences: list[dict[str, Any]] | None = None) -> Alert:
    """An alert row (or a history snapshot, which carries ``silenced`` as it was) as the
    API shows it; ``silenced`` now = an active silence matches its rule and device."""
    silence_id = row.get("silence_id")
    if "silenced" in row or active_silences is None:
        silenced = bool(row.get("silenced", silence_id is not None))
    else:
        match = next((s for s in active_silences if silence_matches(s, row["rule"], row["subject"])), None)
        silenced = match is not None
        silence_id = match["id"] if match is not None else None
    ack = None
    if row.get("acknowledged_at") is not None:
        ack = Acknowledgement(by=row.get("acknowledged_by") or "", at=_dt(row["acknowledged_at"]),
                              comment=row.get("ack_comment"))
    res = None
    if row.get("resolved_at") is not None:
        res = Resolution(at=_dt(row["resolved_at"]), by=row.get("resolved_by"),
                         comment=row.get("resolve_comment"))
    return Alert(
        id=row["id"], fingerprint=row["fingerprint"], rule=row["rule"], device=row["subject"],
        device_kind=row["device_kind"], state=row["status"], severity=row["severity"],
        message=row["message"] or "", details=row["details"] or {}, revision=row["revision"],
        started_at=_dt(row["started"]), last_transition_at=_dt(row["last_ts"]),
        last_change_at=_dt(row["last_change"]), acknowledged=ack, resolved=res,
        silenced=silenced, silence_id=silence_id)


def history_model(h: dict[str, Any]) -> HistoryEntry:
    a = h["alert"]
    return HistoryEntry(change=h["id"], kind=h["kind"], source=h["source"], at=_dt(h["ts"]),
                        started_at=ms_to_dt(h["started"]), revision=h["revision"], actor=h["actor"],
                        comment=h["comment"], severity=a["severity"], state=a["status"],
                        message=a.get("message") or "")


def silence_model(s: dict[str, Any], now: int) -> Silence:
    return Silence(id=s["id"], rule=s["rule"], device=s["device"], starts_at=_dt(s["starts_at"]),
                   ends_at=_dt(s["ends_at"]), active=s["starts_at"] <= now < s["ends_at"],
                   created_by=s.get("created_by"), created_at=_dt(s["created_at"]),
                   comment=s.get("comment"))


def _json(v: str | None) -> Any:
    import orjson

    return None if v is None else orjson.loads(v)


def device_model(d: dict[str, Any]) -> Device:
    latest = _json(d.get("latest"))
    position = vitals = None
    if isinstance(latest, dict):
        if d.get("kind") == "vehicle":
            position = Position(**{k: latest.get(k) for k in ("lat", "lon", "speed", "ignition")})
        elif d.get("kind") == "patient":
            vitals = latest
    return Device(
        id=d["id"], kind=d.get("kind"), status=d.get("status") or "unknown",
        last_seen=ms_to_dt(d.get("last_seen") or None), version=d.get("version"),
        outbox_depth=d.get("outbox_depth"), outbox_bytes=d.get("outbox_bytes"),
        dropped=d.get("dropped"), position=position, vitals=vitals, news2=_json(d.get("news2")),
        window=_json(d.get("window")), active_alerts=_json(d.get("active_alerts")) or [],
        state_at=ms_to_dt(d.get("state_ts")), status_at=ms_to_dt(d.get("status_received")))


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
