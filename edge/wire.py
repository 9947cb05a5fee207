"""The wire contract between devices and the gateway: MQTT topics and payloads.

This module owns it (see DESIGN.md); the gateway imports it and never re-declares it.
Pure functions, standard library only: it ships in the edge install.

Topics, for a device id ``d``:

=========================  ===============  =====  ===================================
topic                      direction        QoS    payload
=========================  ===============  =====  ===================================
``vigil/d/events``         device → gateway 1      a batch of events (``encode_events``)
``vigil/d/status``         device → gateway 1, r   ``Status`` (retained; last will)
``vigil/d/ack``            gateway → device 1      ``{"seq": N}``: every event of d with
                                                   seq ≤ N is durably in the log (or in
                                                   ``telemetry.rejected``)
``vigil/d/config``         gateway → device 1, r   remote configuration (JSON object)
=========================  ===============  =====  ===================================

An events payload is compact JSON::

    {"v": 1, "device": "truck-7", "events": [
        {"seq": 41, "ts": 1764072000123, "kind": "gps", "data": {"lat": 52.1, ...}}, ...]}

``seq`` is per device, strictly increasing, surviving reboots; ``ts`` is the event time
at the sensor in milliseconds since the Unix epoch (UTC); ``kind`` names the reading
(``gps``, ``vitals``, ``obd``, ``gpio``, ``adc``, ``button``, ...); ``data`` is a JSON
object. A batch is validated event by event, so one bad event does not sink the others.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_EVENTS_PAYLOAD",
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "DecodedEvents",
    "Event",
    "InvalidEvent",
    "Status",
    "WireError",
    "ack_topic",
    "check_device_id",
    "config_topic",
    "decode_ack",
    "decode_config",
    "decode_events",
    "decode_status",
    "encode_ack",
    "encode_config",
    "encode_events",
    "encode_status",
    "events_topic",
    "parse_topic",
    "status_topic",
]

SCHEMA_VERSION = 1
TOPIC_ROOT = "vigil"
MAX_EVENTS_PAYLOAD = 256 * 1024  # bytes; the gateway refuses bigger payloads
MAX_KIND_LENGTH = 32
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
CHANNELS = ("events", "status", "ack", "config")


class WireError(ValueError):
    """A payload or topic that does not follow the contract; the message says why."""


def check_device_id(device: str) -> str:
    if not isinstance(device, str) or not _DEVICE_ID.match(device):
        raise WireError(
            f"device id {device!r} is invalid: 1-64 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit")
    return device


def events_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{check_device_id(device)}/events"


def status_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{check_device_id(device)}/status"


def ack_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{check_device_id(device)}/ack"


def config_topic(device: str) -> str:
    return f"{TOPIC_ROOT}/{check_device_id(device)}/config"


def parse_topic(topic: str) -> tuple[str, str]:
    """``vigil/<device>/<channel>`` -> (device, channel)."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_ROOT or parts[2] not in CHANNELS:
        raise WireError(f"topic {topic!r} is not vigil/<device>/{{{','.join(CHANNELS)}}}")
    return check_device_id(parts[1]), parts[2]


@dataclass(frozen=True, slots=True)
class Event:
    device: str
    seq: int
    ts: int  # ms since the epoch, UTC, at the sensor
    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "data": self.data}


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    index: int  # position in the batch
    raw: Any  # what was there
    reason: str
    seq: int | None = None  # when it could be read: the gateway still acks past it


@dataclass(frozen=True, slots=True)
class DecodedEvents:
    device: str
    events: list[Event] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_events(device: str, events: list[Event]) -> bytes:
    """One MQTT payload carrying ``events`` (all of ``device``, in seq order)."""
    check_device_id(device)
    return _dumps({"v": SCHEMA_VERSION, "device": device, "events": [e.to_json() for e in events]})


def _check_event(device: str, raw: Any) -> Event:
    if not isinstance(raw, dict):
        raise WireError(f"an event must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - {"seq", "ts", "kind", "data"}
    if unknown:
        raise WireError(f"unknown event field(s): {', '.join(sorted(unknown))}")
    seq, ts, kind, data = raw.get("seq"), raw.get("ts"), raw.get("kind"), raw.get("data")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"seq must be a non-negative integer, got {seq!r}")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise WireError(f"ts must be milliseconds since the epoch (an integer), got {ts!r}")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise WireError(f"kind must be 1-32 characters of a-z 0-9 _ . - starting with a letter, got {kind!r}")
    if not isinstance(data, dict):
        raise WireError(f"data must be a JSON object, got {type(data).__name__}")
    return Event(device, seq, ts, kind, data)


def decode_events(payload: bytes, *, max_bytes: int = MAX_EVENTS_PAYLOAD) -> DecodedEvents:
    """Parse an events payload. Raises WireError when the envelope is unusable; events
    that are individually wrong come back in ``invalid`` with their reason."""
    if len(payload) > max_bytes:
        raise WireError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise WireError("payload must be a JSON object with v, device and events")
    version = doc.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {version!r} (this gateway reads {SCHEMA_VERSION})")
    device = check_device_id(doc.get("device"))  # type: ignore[arg-type]
    raw_events = doc.get("events")
    if not isinstance(raw_events, list):
        raise WireError("events must be a list")
    out = DecodedEvents(device)
    last_seq = -1
    for i, raw in enumerate(raw_events):
        try:
            event = _check_event(device, raw)
            if event.seq <= last_seq:
                raise WireError(f"seq {event.seq} does not follow {last_seq} (seqs increase within a batch)")
        except WireError as exc:
            seq = raw.get("seq") if isinstance(raw, dict) else None
            out.invalid.append(InvalidEvent(i, raw, str(exc),
                                            seq if isinstance(seq, int) and not isinstance(seq, bool) else None))
            continue
        last_seq = event.seq
        out.events.append(event)
    return out


def encode_ack(seq: int) -> bytes:
    return _dumps({"seq": seq})


def decode_ack(payload: bytes) -> int:
    try:
        doc = json.loads(payload)
        seq = doc["seq"]
    except (ValueError, TypeError, KeyError):
        raise WireError(f"ack payload {payload[:64]!r} is not {{\"seq\": N}}") from None
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise WireError(f"ack seq must be an integer, got {seq!r}")
    return seq


@dataclass(frozen=True, slots=True)
class Status:
    state: str  # "online" or "offline"
    version: str = ""
    outbox_depth: int = 0
    outbox_bytes: int = 0
    dropped: int = 0
    ts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def encode_status(status: Status) -> bytes:
    if status.state not in ("online", "offline"):
        raise WireError(f"status state must be online or offline, got {status.state!r}")
    return _dumps({"state": status.state, "version": status.version, "outbox_depth": status.outbox_depth,
                   "outbox_bytes": status.outbox_bytes, "dropped": status.dropped, "ts": status.ts,
                   **({"extra": status.extra} if status.extra else {})})


def decode_status(payload: bytes) -> Status:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("status payload is not JSON") from None
    if not isinstance(doc, dict) or doc.get("state") not in ("online", "offline"):
        raise WireError("status must be a JSON object whose state is online or offline")
    ints = {k: doc.get(k, 0) for k in ("outbox_depth", "outbox_bytes", "dropped", "ts")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()):
        raise WireError("status counters must be integers")
    return Status(doc["state"], str(doc.get("version", "")), extra=dict(doc.get("extra") or {}), **ints)


def encode_config(config: dict[str, Any]) -> bytes:
    return _dumps(config)


def decode_config(payload: bytes) -> dict[str, Any]:
    if not payload:
        return {}  # a cleared retained config
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("config payload is not JSON") from None
    if not isinstance(doc, dict):
        raise WireError("config must be a JSON object")
    return doc
