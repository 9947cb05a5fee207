"""The MQTT -> log bridge: the I/O shell around ``gateway.core``.

Two threads:

* paho's network thread receives ``vigil/+/events`` messages (QoS 1, ``manual_ack``, a
  persistent MQTT 5 session, a shared subscription when the broker offers one), runs the
  pure ``classify`` on each and queues the result;
* the log thread owns the confluent-kafka producer and the ``AckLedger``: it produces
  every record (idempotent, acks=all, compressed, a few ms of linger), serves delivery
  callbacks, and when the oldest messages are fully in the log it PUBACKs them in receive
  order and publishes each device's highest settled seq on ``vigil/<device>/ack``.

When the log is unreachable librdkafka keeps retrying (``message.timeout.ms=0``: a record
never expires), nothing completes, so nothing is acknowledged: the MQTT broker stops
sending once its in-flight window is full and the devices keep their outboxes. When the
log returns, delivery resumes by itself. A crash loses nothing either: what was not
PUBACKed is redelivered (persistent session) or resent by the device (ack timeout); the
copies that were already in the log are the duplicates consumers drop by (device, seq).

A PUBACK is only sent on the connection that received the message; after a reconnect
the broker redelivers those messages, and the copies are committed (again) and acked.

Device status: the bridge also reads the agents' retained ``vigil/+/status`` messages
(``online`` on every connect and every few seconds, ``offline`` on a clean stop or as the
last will when a device vanishes) and writes each, through the pure ``classify_status``,
as one record to the compacted ``device-status`` topic (``BridgeConfig.status_topic``):
key = device id, value = JSON ``{"device", "state", "version", "outbox_depth",
"outbox_bytes", "dropped", "ts", "received"}`` (``ts`` is the agent's clock, 0 in a last
will, which the agent composes when it connects; ``received`` is the gateway's clock and
the record's timestamp). A malformed status goes to ``telemetry.rejected`` with reason
``bad-status``. Only a device may publish its own status (the ACL, see
``gateway.credentials.acl_text``), so the topic names whose status it is. Status
messages share the events' ack ledger: one is PUBACKed only once its record is in the
log. The status subscription is not shared (MQTT 5 sends no retained messages to shared
subscriptions): every bridge writes every status. With MQTT 5 the retained statuses are
sent once per session (``retainHandling=1``): a bridge with a new session writes them all,
one that reconnects to its session does not; with MQTT 3.1.1 every connect writes them
again. Those carry a ``retained: 1`` header. The copies are harmless on a compacted topic
keyed by device; with several bridges a reader that cares about order picks the newest
``received``.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge import wire
from gateway.core import (
    REJECTED_SNIPPET,
    AckLedger,
    Classified,
    DeviceAcks,
    Record,
    SkewBounds,
    classify,
)
from gateway.metrics import BridgeMetrics

__all__ = ["STATUS_FIELDS", "Bridge", "BridgeConfig", "BridgeFailed", "classify_status"]

log = logging.getLogger("vigil.gateway")


def _client_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What of the producer's settings any client needs too (security, addressing), for
    the admin client that creates the topics."""
    producer_only = {"linger.ms", "batch.size", "batch.num.messages", "compression.type",
                     "compression.codec", "acks", "enable.idempotence", "message.timeout.ms",
                     "queue.buffering.max.messages", "queue.buffering.max.kbytes", "retries",
                     "delivery.timeout.ms", "max.in.flight.requests.per.connection", "request.required.acks"}
    return {k: v for k, v in config.items() if k not in producer_only}


class BridgeFailed(RuntimeError):
    """The producer hit a fatal error; the process should exit (and be restarted)."""


@dataclass(frozen=True)
class BridgeConfig:
    bootstrap: str = "127.0.0.1:9092"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str = field(default_factory=lambda: f"vigil-bridge-{socket.gethostname()}")
    group: str = "vigil-bridge"
    shared: bool | None = None  # None: when the broker says it supports it
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 1000  # unacked messages the MQTT broker may send us (MQTT 5)
    mqtt_version: str = "5"  # or "3.1.1" (then clean_session=False, no $share, e.g. amqtt)
    keepalive: int = 15
    telemetry_topic: str = "telemetry"
    rejected_topic: str = "telemetry.rejected"
    status_topic: str = "device-status"  # compacted: the latest status per device
    max_payload: int = wire.MAX_EVENTS_PAYLOAD
    skew: SkewBounds = field(default_factory=SkewBounds)
    linger_ms: int = 5
    compression: str = "lz4"
    producer_config: dict[str, str] = field(default_factory=dict)
    create_topics: bool = True
    gap_wait_ms: int = 2000  # how long a device ack waits for a gap another bridge may fill
    max_in_flight: int = 20_000  # messages held unacked before the bridge stops reading MQTT


@dataclass(slots=True)
class _Inbound:
    generation: int
    mid: int
    qos: int
    classified: Classified
    received_at: float
    status: bool = False  # a vigil/<device>/status message, not events


STATUS_FIELDS = ("device", "state", "version", "outbox_depth", "outbox_bytes", "dropped", "ts", "received")
MAX_STATUS_PAYLOAD = 64 * 1024  # an agent's status with its per-sensor extras is a few KiB at most


def classify_status(mqtt_topic: str, payload: bytes, *, now_ms: int, status_topic: str = "device-status",
                    rejected: str = "telemetry.rejected", retained: bool = False) -> Classified:
    """What one ``vigil/<device>/status`` message becomes in the log (pure: ``now_ms`` is
    the gateway's clock). A valid status -> one record on ``status_topic``: key = device id,
    value = JSON with ``STATUS_FIELDS``, timestamp = ``now_ms``, and header ``retained: 1``
    when MQTT delivered a stored retained message (the bridge subscribing) rather than a
    live one: then ``received`` is when the bridge read it, not when the device sent it.
    Anything else -> one record on ``rejected`` with header ``reason`` = ``bad-topic`` or
    ``bad-status`` and ``detail``; the agent's ``extra`` is not carried."""
    try:
        device, channel = wire.parse_topic(mqtt_topic)
        if channel != "status":
            raise wire.WireError(f"expected a status topic, not {channel}")
    except wire.WireError as exc:
        return _refused(rejected, None, payload, "bad-topic", str(exc), mqtt_topic)
    if len(payload) > MAX_STATUS_PAYLOAD:
        return _refused(rejected, device, payload, "bad-status",
                        f"status payload of {len(payload)} bytes exceeds {MAX_STATUS_PAYLOAD} bytes", mqtt_topic)
    try:
        st = wire.decode_status(payload)
    except (wire.WireError, TypeError, ValueError) as exc:  # TypeError/ValueError: a non-object extra
        return _refused(rejected, device, payload, "bad-status", str(exc), mqtt_topic)
    value = {"device": device, "state": st.state, "version": st.version, "outbox_depth": st.outbox_depth,
             "outbox_bytes": st.outbox_bytes, "dropped": st.dropped, "ts": st.ts, "received": now_ms}
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    headers = (("retained", b"1"),) if retained else ()
    return Classified(device, [Record(status_topic, device.encode(), body, now_ms, headers)], None, accepted=1)


def _refused(topic: str, device: str | None, payload: bytes, reason: str, detail: str,
             mqtt_topic: str) -> Classified:
    rec = Record(topic, device.encode() if device else None, payload[:REJECTED_SNIPPET], None,
                 (("reason", reason.encode()), ("detail", detail[:500].encode()),
                  ("mqtt-topic", mqtt_topic[:256].encode())))
    return Classified(device, [rec], None, rejected={reason: 1})


@dataclass(slots=True)
class _PeerAck:
    device: str
    seq: int


# A permanent refusal of one record by the log: it goes to the rejected topic instead.
_PERMANENT = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
              KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG}


def _waiting(info: mqtt.MQTTMessageInfo) -> bool:
    """A publish still on its way (not one already through, nor one that failed)."""
    try:
        return not info.is_published()
    except (RuntimeError, ValueError):  # failed: not connected, queue full
        return False


class Bridge:
    def __init__(self, config: BridgeConfig, metrics: BridgeMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or BridgeMetrics()
        self.ledger = AckLedger()
        self.device_acks = DeviceAcks(config.gap_wait_ms)
        self._inbound: queue.SimpleQueue[_Inbound | _PeerAck] = queue.SimpleQueue()
        self._backlog: deque[tuple[int, Record]] = deque()
        self._stop = threading.Event()
        self._generation = 0  # bumped on each MQTT (re)connect; read by the log thread
        self._connected = threading.Event()
        self._fatal: str | None = None
        self._last_warned: dict[str, float] = {}
        self._last_expiry = 0
        self._committed: dict[str, Any] = {}
        self._committed_pending: dict[str, int] = {}  # counted here, added to the metric in bulk
        self._ack_infos: deque[mqtt.MQTTMessageInfo] = deque()  # device acks not yet PUBACKed
        self._producer = Producer(self._producer_settings())
        self._client = self._new_client()

    # --- setup -------------------------------------------------------------------------

    def _producer_settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "bootstrap.servers": c.bootstrap,
            "client.id": c.client_id,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": c.compression,
            "linger.ms": c.linger_ms,
            "message.timeout.ms": 0,  # never give a record up: the log's outage is waited out
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "socket.connection.setup.timeout.ms": 5000,
            "error_cb": self._on_producer_error,
            **c.producer_config,
        }

    def _new_client(self) -> mqtt.Client:
        c = self.config
        if c.mqtt_version == "5":
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id,
                                 protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, clean_session=False,
                                 protocol=MQTTProtocolVersion.MQTTv311, manual_ack=True)
        client.enable_logger(logging.getLogger("vigil.gateway.paho"))
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]  # seconds, floats work
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _ensure_topics(self) -> None:
        c = self.config
        admin = AdminClient({"bootstrap.servers": c.bootstrap, "socket.connection.setup.timeout.ms": 3000,
                             **_client_settings(c.producer_config)})
        topics = [NewTopic(t, num_partitions=-1, replication_factor=-1)
                  for t in (c.telemetry_topic, c.rejected_topic)]
        topics.append(NewTopic(c.status_topic, num_partitions=-1, replication_factor=-1,
                               config={"cleanup.policy": "compact"}))
        futures = admin.create_topics(topics, operation_timeout=5, request_timeout=5)
        for topic, fut in futures.items():
            try:
                fut.result(timeout=8)
                log.info("created topic=%s", topic)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    log.warning("could not create topic=%s (the broker may auto-create it): %s",
                                topic, exc)
            except Exception as exc:  # timeouts: the log is not up yet; auto-creation covers it
                log.warning("could not create topic=%s (the broker may auto-create it): %s", topic, exc)

    # --- MQTT side (paho's thread) ----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("mqtt connect refused host=%s port=%d reason=%s", self.config.mqtt_host,
                      self.config.mqtt_port, reason)
            return
        self._generation += 1
        sock = client.socket()
        if isinstance(sock, socket.socket):  # small acks must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        v5 = self.config.mqtt_version == "5"
        shared = self.config.shared
        if shared is None:  # MQTT 5 says whether $share works; on 3.1.1 we cannot know
            shared = v5 and bool(getattr(properties, "SharedSubscriptionAvailable", 1))
        base = f"{wire.TOPIC_ROOT}/+/events"
        topic = f"$share/{self.config.group}/{base}" if shared else base
        peers = f"{wire.TOPIC_ROOT}/+/ack"  # other bridges' acks (our own echo is harmless)
        status = f"{wire.TOPIC_ROOT}/+/status"  # never shared: shared ones get no retained messages
        if v5:  # retainHandling=1: the retained statuses once per session, not on every reconnect
            client.subscribe([(topic, SubscribeOptions(qos=1)), (peers, SubscribeOptions(qos=0, noLocal=True)),
                              (status, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))])
        else:
            client.subscribe([(topic, 1), (peers, 0), (status, 1)])
        self._connected.set()
        log.info("mqtt connected host=%s port=%d session_present=%s subscription=%s",
                 self.config.mqtt_host, self.config.mqtt_port,
                 getattr(flags, "session_present", None), topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("mqtt disconnected reason=%s; reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._receive(client, msg)
        except Exception:  # a bug: crash (unacked messages come back) rather than hang
            log.exception("failed on a message from topic=%s; stopping", msg.topic)
            self._fatal = "internal error on an MQTT message"
            self._stop.set()

    def _receive(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/ack"):  # a peer bridge's ack
            try:
                device, _ = wire.parse_topic(msg.topic)
                self._inbound.put(_PeerAck(device, wire.decode_ack(bytes(msg.payload))))
            except wire.WireError as exc:
                self._warn("peer-ack", "ignoring an ack on %s: %s", msg.topic, exc)
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            return
        # Memory stays bounded even when the MQTT broker ignores its in-flight limit (Mosquitto
        # 2.0.11): past max_in_flight, stop reading until the log catches up. A long stall
        # costs the MQTT connection (keepalive); the unacked messages are then redelivered.
        while self._inbound.qsize() + len(self.ledger) >= self.config.max_in_flight and not self._stop.is_set():
            self._warn("in-flight", "%d messages in flight: waiting for the log", len(self.ledger))
            time.sleep(0.01)
        now = time.time()
        if msg.topic.endswith("/status"):
            result = classify_status(msg.topic, bytes(msg.payload), now_ms=int(now * 1000),
                                     status_topic=self.config.status_topic, rejected=self.config.rejected_topic,
                                     retained=bool(msg.retain))
            self._inbound.put(_Inbound(self._generation, msg.mid, msg.qos, result, time.monotonic(), True))
            return
        result = classify(msg.topic, bytes(msg.payload), now_ms=int(now * 1000),
                          telemetry=self.config.telemetry_topic, rejected=self.config.rejected_topic,
                          max_payload=self.config.max_payload, skew=self.config.skew)
        self._inbound.put(_Inbound(self._generation, msg.mid, msg.qos, result, time.monotonic()))

    # --- log side (the log thread) -----------------------------------------------------

    def _on_producer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = f"fatal producer error: {err}"
            self._stop.set()
        else:
            self._warn("log", "log unavailable or degraded: %s", err)

    def _warn(self, key: str, fmt: str, *args: object) -> None:
        """At most one warning per key every 5 s: a flood of bad traffic must not flood logs."""
        now = time.monotonic()
        if now - self._last_warned.get(key, -1e9) >= 5:
            self._last_warned[key] = now
            log.warning(fmt, *args)

    def _accept(self, item: _Inbound | _PeerAck) -> None:
        if isinstance(item, _PeerAck):
            seq = self.device_acks.observed(item.device, item.seq)
            if seq is not None:
                self._publish_ack(item.device, seq)
            return
        c = item.classified
        m = self.metrics
        if not item.status:  # the metrics count events messages
            m.messages_in.inc()
            m.events_in.inc(c.accepted)
        if c.skewed:
            m.skewed.inc(c.skewed)
        for reason, n in c.rejected.items():
            m.rejected.labels(reason).inc(n)
            detail = next((r.header("detail") for r in c.records if r.header("reason") == reason.encode()), b"")
            self._warn(f"reject-{reason}", "rejected reason=%s device=%s count=%d detail=%s",
                       reason, c.device, n, (detail or b"").decode(errors="replace"))
        token = self.ledger.add(item.mid, item.qos, item.generation, c.device, c.first_seq, c.ack_seq,
                                len(c.records), item.received_at)
        self._backlog.extend((token, r) for r in c.records)

    def _produce_backlog(self) -> None:
        while self._backlog:
            token, rec = self._backlog[0]
            try:
                self._producer.produce(rec.topic, value=rec.value, key=rec.key,
                                       timestamp=rec.timestamp_ms or 0, headers=list(rec.headers),
                                       on_delivery=self._delivery_callback(token, rec))
            except BufferError:
                break  # the producer's queue is full: the log is slow or away; try again later
            self._backlog.popleft()
        self.metrics.backlog.set(len(self._backlog))

    def _committed_counter(self, topic: str) -> Any:
        counter = self._committed.get(topic)
        if counter is None:
            counter = self._committed[topic] = self.metrics.committed.labels(topic)
        return counter

    def _delivery_callback(self, token: int, rec: Record) -> Any:
        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                self.ledger.delivered(token)
                self._committed_pending[rec.topic] = self._committed_pending.get(rec.topic, 0) + 1
                return
            self.metrics.delivery_errors.labels(err.name()).inc()
            if err.fatal():
                self._fatal = f"fatal producer error: {err}"
                self._stop.set()
            elif err.code() in _PERMANENT and rec.topic != self.config.rejected_topic:
                log.error("log refused a record topic=%s key=%s error=%s; writing it to %s",
                          rec.topic, rec.key, err, self.config.rejected_topic)
                self.metrics.rejected.labels("log-refused").inc()
                self._backlog.append((token, Record(
                    self.config.rejected_topic, rec.key, rec.value[:1024], None,
                    (*rec.headers, ("reason", b"log-refused"), ("detail", str(err).encode()[:500])))))
            elif err.code() in _PERMANENT:
                self._fatal = f"the log refuses rejected records: {err}"
                self._stop.set()
            else:  # transient: produce it again (at-least-once; consumers dedup by device+seq)
                self._warn("delivery", "delivery failed topic=%s error=%s; retrying", rec.topic, err)
                self._backlog.append((token, rec))
        return delivered

    def _complete(self) -> None:
        now_ms = int(time.time() * 1000)
        if now_ms - self._last_expiry >= 100:
            self._last_expiry = now_ms
            for device, seq in self.device_acks.expire(now_ms).items():
                self._warn("gap", "a gap before seq %d of %s was not filled in %d ms; acking past it",
                           seq, device, self.config.gap_wait_ms)
                self._publish_ack(device, seq)
        if self._committed_pending:
            for topic, n in self._committed_pending.items():
                self._committed_counter(topic).inc(n)
            self._committed_pending.clear()
        done = self.ledger.pop_completed()
        if not done:
            return
        generation = self._generation
        acks: dict[str, int] = {}
        for c in done:
            if c.qos > 0 and c.generation == generation:
                self._client.ack(c.mid, c.qos)
            self.metrics.ack_latency.observe(time.monotonic() - c.received_at)
            if c.device is not None and c.first_seq is not None and c.ack_seq is not None:
                before = self.device_acks.acked(c.device)
                if before is not None and c.ack_seq <= before:
                    self.metrics.duplicate_messages.inc()
                ack = self.device_acks.committed(c.device, c.first_seq, c.ack_seq, now_ms)
                if ack is not None:
                    acks[c.device] = ack
        for device, seq in acks.items():
            self._publish_ack(device, seq)

    def _publish_ack(self, device: str, seq: int) -> None:
        info = self._client.publish(wire.ack_topic(device), wire.encode_ack(seq), qos=1)
        self.metrics.device_acks.inc()
        self._ack_infos.append(info)
        while self._ack_infos and not _waiting(self._ack_infos[0]):
            self._ack_infos.popleft()

    def _log_loop(self) -> None:
        while not self._stop.is_set():
            took = 0
            try:
                while took < 5000:
                    self._accept(self._inbound.get_nowait())
                    took += 1
            except queue.Empty:
                pass
            self._produce_backlog()
            self._producer.poll(0 if took else 0.005)
            self._complete()
            self.metrics.in_flight.set(len(self.ledger))

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``; raises BridgeFailed on a fatal producer error."""
        c = self.config
        if c.create_topics:
            self._ensure_topics()
        if c.mqtt_version == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = c.session_expiry_s
            props.ReceiveMaximum = c.receive_maximum
            self._client.connect_async(c.mqtt_host, c.mqtt_port, keepalive=c.keepalive,
                                       clean_start=False, properties=props)
        else:
            self._client.connect_async(c.mqtt_host, c.mqtt_port, keepalive=c.keepalive)
        self._client.loop_start()
        log.info("bridge started mqtt=%s:%d bootstrap=%s client_id=%s", c.mqtt_host, c.mqtt_port,
                 c.bootstrap, c.client_id)
        try:
            self._log_loop()
        finally:
            self._shutdown()
        if self._fatal:
            raise BridgeFailed(self._fatal)

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self, grace_s: float = 5.0) -> None:
        """Stop taking messages, give what is in flight a moment to commit and be acked;
        anything left is redelivered to the next bridge (persistent session)."""
        self._client.on_message = lambda *a: None
        if not self._fatal:
            deadline = time.monotonic() + grace_s
            while len(self.ledger) and time.monotonic() < deadline:
                try:
                    while True:
                        self._accept(self._inbound.get_nowait())
                except queue.Empty:
                    pass
                self._produce_backlog()
                self._producer.poll(0.01)
                self._complete()
            deadline = time.monotonic() + 2  # let the devices' last acks reach Mosquitto
            while self._ack_infos and time.monotonic() < deadline:
                if not _waiting(self._ack_infos[0]):
                    self._ack_infos.popleft()
                else:
                    time.sleep(0.01)
        self._client.disconnect()
        self._client.loop_stop()
        self._producer.flush(0 if self._fatal else 2)
        log.info("bridge stopped pending=%d", len(self.ledger))
