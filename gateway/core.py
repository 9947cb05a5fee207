"""The bridge's pure core: what an MQTT events message becomes in the log, and when it may
be acknowledged. No sockets, no threads, no clock (``now_ms`` is passed in).

``classify`` turns one MQTT message (topic + payload) into log records:

* every valid event -> one record on the telemetry topic: key = device id, value = the
  event as JSON (``device, seq, ts, kind, data``), timestamp = the event's ``ts``, headers
  ``seq``, ``kind``, ``schema`` (and ``clock-skew`` when ``ts`` is further than the bound
  from the gateway's clock: flagged with ``ts - now`` in ms, positive when ahead, never
  rewritten);
* everything refused -> one record on the rejected topic with the reason in the
  ``reason`` header (``oversize``, ``bad-topic``, ``bad-envelope``, ``identity``,
  ``invalid-event``) and the details in ``detail``. An oversized payload is kept as its
  first ``REJECTED_SNIPPET`` bytes (with ``size``), so the log never refuses the record.

``AckLedger`` is the FIFO of received messages. Each waits for all of its records to be
delivered; messages leave it strictly in receive order (MQTT acks must be sent in that
order), and only then is the device told the highest seq that is safe.

``DeviceAcks`` decides that seq: the highest *contiguously* committed one. Several bridges
share the subscription, so one device's batches may be committed by different bridges in
any order; a bridge that committed seqs 21..40 must not ack 40 (the device would forget
1..20) until 1..20 are known to be in the log: committed here, or acked by a peer bridge
(bridges see each other's acks on ``vigil/+/ack``). A gap nobody fills (events the edge
dropped itself, or a bridge that just started and knows nothing yet) is waited out for
``gap_wait_ms``, then passed.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

from edge import wire

__all__ = [
    "REASONS",
    "AckLedger",
    "Classified",
    "Completed",
    "DeviceAcks",
    "Record",
    "SkewBounds",
    "classify",
]

REJECTED_SNIPPET = 1024
REASONS = ("oversize", "bad-topic", "bad-envelope", "identity", "invalid-event")

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True, slots=True)
class SkewBounds:
    """How far an event's ts may be from the gateway's clock before it is flagged."""

    future_ms: int = 5 * 60 * 1000
    past_ms: int = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Classified:
    device: str | None  # from the topic, when it names one
    records: list[Record]
    ack_seq: int | None  # the highest seq this message settles for ``device``
    first_seq: int | None = None  # the lowest
    accepted: int = 0  # events bound for telemetry
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    skewed: int = 0


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _event_value(device: str, event: wire.Event) -> bytes:
    """``{"device", "seq", "ts", "kind", "data"}`` as compact JSON. The device id and kind
    are validated by edge.wire to characters JSON needs no escaping for, so only ``data``
    goes through the encoder (the hot path: one call per event)."""
    return (f'{{"device":"{device}","seq":{event.seq},"ts":{event.ts},"kind":"{event.kind}","data":'
            ).encode() + _dumps(event.data) + b"}"


def _rejected(topic: str, key: str | None, value: bytes, reason: str, detail: str,
              mqtt_topic: str, extra: Headers = ()) -> Record:
    return Record(topic, key.encode() if key else None, value, None,
                  (("reason", reason.encode()), ("detail", detail[:500].encode()),
                   ("mqtt-topic", mqtt_topic[:256].encode()), *extra))


def classify(mqtt_topic: str, payload: bytes, *, now_ms: int, telemetry: str = "telemetry",
             rejected: str = "telemetry.rejected", max_payload: int = wire.MAX_EVENTS_PAYLOAD,
             skew: SkewBounds = SkewBounds()) -> Classified:
    try:
        device, channel = wire.parse_topic(mqtt_topic)
        if channel != "events":
            raise wire.WireError(f"the bridge reads events, not {channel}")
    except wire.WireError as exc:
        rec = _rejected(rejected, None, payload[:REJECTED_SNIPPET], "bad-topic", str(exc), mqtt_topic)
        return Classified(None, [rec], None, rejected={"bad-topic": 1})
    if len(payload) > max_payload:
        rec = _rejected(rejected, device, payload[:REJECTED_SNIPPET], "oversize",
                        f"payload of {len(payload)} bytes exceeds the {max_payload}-byte limit",
                        mqtt_topic, (("size", str(len(payload)).encode()),))
        return Classified(device, [rec], None, rejected={"oversize": 1})
    try:
        batch = wire.decode_events(payload, max_bytes=max_payload)
    except wire.WireError as exc:
        rec = _rejected(rejected, device, payload, "bad-envelope", str(exc), mqtt_topic)
        return Classified(device, [rec], None, rejected={"bad-envelope": 1})
    if batch.device != device:
        # The ACL lets only `device` publish here, so the publisher is `device` claiming to
        # be someone else: refuse it all, and ack nothing (its seqs are not `device`'s).
        rec = _rejected(rejected, device, payload, "identity",
                        f"topic names device {device!r} but the payload says {batch.device!r}",
                        mqtt_topic)
        return Classified(device, [rec], None, rejected={"identity": 1})

    records: list[Record] = []
    seqs: list[int] = []
    skewed = 0
    key = device.encode()
    for event in batch.events:
        headers: list[tuple[str, bytes]] = [("seq", str(event.seq).encode()),
                                            ("kind", event.kind.encode()),
                                            ("schema", str(batch.schema_version).encode())]
        ahead = event.ts - now_ms
        if ahead > skew.future_ms or -ahead > skew.past_ms:
            headers.append(("clock-skew", str(ahead).encode()))
            skewed += 1
        records.append(Record(telemetry, key, _event_value(device, event), event.ts, tuple(headers)))
        seqs.append(event.seq)
    for bad in batch.invalid:
        extra: Headers = (("seq", str(bad.seq).encode()),) if bad.seq is not None else ()
        records.append(_rejected(rejected, device, _dumps(bad.raw), "invalid-event",
                                 f"event {bad.index}: {bad.reason}", mqtt_topic, extra))
        if bad.seq is not None:
            seqs.append(bad.seq)
    return Classified(device, records, max(seqs) if seqs else None, min(seqs) if seqs else None,
                      accepted=len(batch.events),
                      rejected={"invalid-event": len(batch.invalid)} if batch.invalid else {},
                      skewed=skewed)


@dataclass(slots=True)
class _Pending:
    token: int
    mid: int
    qos: int
    generation: int
    device: str | None
    first_seq: int | None
    ack_seq: int | None
    received_at: float
    outstanding: int


@dataclass(frozen=True, slots=True)
class Completed:
    """A message whose records are all in the log: PUBACK it (when its connection is still
    the current one), then tell ``device`` its acked seq."""

    mid: int
    qos: int
    generation: int
    device: str | None
    first_seq: int | None
    ack_seq: int | None
    received_at: float


class AckLedger:
    """Received messages in receive order, each waiting for its records' delivery."""

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()
        self._by_token: dict[int, _Pending] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, mid: int, qos: int, generation: int, device: str | None, first_seq: int | None,
            ack_seq: int | None, records: int, received_at: float) -> int:
        self._next += 1
        p = _Pending(self._next, mid, qos, generation, device, first_seq, ack_seq, received_at, records)
        self._queue.append(p)
        if records:
            self._by_token[p.token] = p
        return p.token

    def delivered(self, token: int) -> None:
        """One record of message ``token`` is in the log."""
        p = self._by_token[token]
        p.outstanding -= 1
        if p.outstanding == 0:
            del self._by_token[token]

    def pop_completed(self) -> list[Completed]:
        """Messages now fully in the log, oldest first, stopping at the first that is not."""
        out: list[Completed] = []
        while self._queue and self._queue[0].outstanding == 0:
            p = self._queue.popleft()
            out.append(Completed(p.mid, p.qos, p.generation, p.device, p.first_seq, p.ack_seq,
                                 p.received_at))
        return out


@dataclass(slots=True)
class _DeviceState:
    acked: int
    held: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, since_ms)


class DeviceAcks:
    """Per device, the highest seq with everything up to it in the log."""

    def __init__(self, gap_wait_ms: int = 2000) -> None:
        self.gap_wait_ms = gap_wait_ms
        self._devices: dict[str, _DeviceState] = {}

    def acked(self, device: str) -> int | None:
        st = self._devices.get(device)
        return None if st is None else st.acked

    def committed(self, device: str, first: int, last: int, now_ms: int) -> int | None:
        """Seqs ``first..last`` of ``device`` are in the log (by this bridge). Returns the
        ack to send the device (its current one again for a resent old batch), or None while
        this range waits behind a gap."""
        st = self._devices.get(device)
        if st is None:  # nothing known: take this as the start
            self._devices[device] = _DeviceState(last)
            return last
        if first > st.acked + 1:
            st.held.append((first, last, now_ms))
            return None
        self._advance(st, last)
        return st.acked

    def observed(self, device: str, seq: int) -> int | None:
        """A peer bridge acked ``seq``: everything up to it is in the log. Returns the new
        ack this bridge should publish (when held ranges now follow on), else None."""
        st = self._devices.get(device)
        if st is None:
            self._devices[device] = _DeviceState(seq)
            return None
        before = st.acked
        new = self._advance(st, seq)
        return new if new is not None and new > max(before, seq) else None

    def expire(self, now_ms: int) -> dict[str, int]:
        """Gaps held longer than ``gap_wait_ms`` are passed: returns the acks that moved."""
        out: dict[str, int] = {}
        for device, st in self._devices.items():
            if st.held and min(since for _, _, since in st.held) + self.gap_wait_ms <= now_ms:
                self._advance(st, min(first for first, _, _ in st.held) - 1)  # as if filled
                out[device] = st.acked
        return out

    @staticmethod
    def _advance(st: _DeviceState, upto: int) -> int | None:
        before = st.acked
        st.acked = max(st.acked, upto)
        changed = True
        while changed:
            changed = False
            rest = []
            for h in st.held:
                if h[0] > st.acked + 1:
                    rest.append(h)
                elif h[1] > st.acked:
                    st.acked = h[1]
                    changed = True
            st.held = rest
        return st.acked if st.acked > before else None
