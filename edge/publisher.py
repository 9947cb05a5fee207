"""The MQTT side of the agent: sends the outbox to the gateway and applies its acks.

Session, as the gateway sees it (paho-mqtt 2.x, MQTT 3.1.1):

- client id = the device id; ``clean_session = False`` (a persistent session: the broker
  keeps the ack/config subscriptions and queues acks while the device is away);
- last will: ``vigil/<id>/status`` = ``Status("offline")``, QoS 1, retained; on every
  connect and every ``status_interval_s`` a retained ``Status("online", version, outbox
  depth/bytes, dropped, extra={...counters, sensors, remote_config})``; an explicit
  retained offline status on a clean shutdown (a will is not sent then);
- events: ``vigil/<id>/events``, QoS 1, not retained, ``wire.encode_events`` batches of
  up to ``batch_max_events`` events and ``wire.MAX_EVENTS_PAYLOAD`` bytes, in seq order;
- subscribes ``vigil/<id>/ack`` (QoS 1) and ``vigil/<id>/config`` (QoS 1, retained).

Flow. At most ``inflight_batches`` batches are published and not yet acked by the
gateway. The outbox is the source of truth: on every (re)connect the window is emptied and
re-derived from the outbox (a fresh paho client each time, so paho does not replay its own
copies on top), i.e. everything not acked is sent again from the oldest — duplicates of
unacked events are what at-least-once allows, and the gateway/consumers drop them by
(device, seq). Nothing at or below the acked seq is ever sent again: it is no longer in
the outbox. When the gateway says nothing for ``ack_timeout_s`` while batches are in
flight, the window is re-sent the same way (the gateway may have lost them).

Slow start. After every (re)connect and every ack-timeout resend, only ONE batch (the
oldest unacked events) is sent until the gateway acks it. Acks are cumulative ("every seq
<= N is in the log"), so if several batches went out while the gateway was not yet
subscribed (a broker that restarted without persistence, before the gateway's session
came back), a later batch could reach the gateway and be acked past an earlier one the
broker threw away — losing it. One probe batch first means a later batch is only ever
sent once the gateway is known to be listening.

Reconnects back off exponentially with jitter: attempt n waits a uniformly random time in
[cap/2, cap], cap = min(reconnect_max_s, reconnect_min_s * 2**n), so a fleet that lost its
gateway together does not reconnect in lockstep.

Threading: one thread of its own drives paho's ``loop()`` (connect, send, receive, all
callbacks). The agent thread only appends to the outbox; the loop picks new events up
within one 50 ms turn.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge import wire
from edge.config import Config, MqttConfig
from edge.outbox import Outbox

__all__ = ["Publisher", "backoff_delay", "probe_connection"]

log = logging.getLogger("vigil.edge")


def backoff_delay(attempt: int, min_s: float, max_s: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): jittered in [cap/2, cap]."""
    cap = min(max_s, min_s * (2 ** min(attempt, 32)))
    return max(min_s, cap * (0.5 + 0.5 * rnd())) if attempt else min_s * (0.5 + 0.5 * rnd())


def _credentials(client: mqtt.Client, cfg: MqttConfig) -> None:
    """The device's login: username/password and/or a client certificate over TLS."""
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls is not None:
        t = cfg.tls
        client.tls_set(ca_certs=str(t.ca) if t.ca else None, certfile=str(t.cert) if t.cert else None,
                       keyfile=str(t.key) if t.key else None, cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)


@dataclass(slots=True)
class _Batch:
    first: int
    last: int
    sent_at: float


class Publisher:
    def __init__(self, config: Config, outbox: Outbox, *, version: str = "",
                 status_extra: Callable[[], dict[str, Any]] = dict,
                 on_remote_config: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = config.mqtt
        self.device = config.device.id
        self.batch_max_events = config.outbox.batch_max_events
        self.outbox = outbox
        self.version = version
        self.status_extra = status_extra
        self.on_remote_config = on_remote_config
        self.status_interval_s = self.cfg.status_interval_s
        self._clock = clock
        self._topic_events = wire.events_topic(self.device)
        self._topic_status = wire.status_topic(self.device)
        self._topic_ack = wire.ack_topic(self.device)
        self._topic_config = wire.config_topic(self.device)
        self._client: mqtt.Client | None = None
        self._connected = False
        self._attempt = 0
        self._next_attempt = 0.0
        self._window: deque[_Batch] = deque()
        self._last_sent = 0
        self._probing = True  # one batch in flight until the gateway acks on this connection
        self._probe_last: int | None = None  # last seq of that probe batch
        self._next_status = 0.0
        self._status_requested = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # counters, for the status and for tests/benchmarks
        self.connects = 0
        self.batches_sent = 0
        self.events_sent = 0
        self.resends = 0

    # -- the agent's side ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"vigil-mqtt-{self.device}", daemon=True)
        self._thread.start()

    def request_status(self) -> None:
        self._status_requested = True

    def stop(self, timeout: float = 5.0) -> None:
        """Send the retained offline status (when connected), disconnect, join the thread."""
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout)

    # -- the network thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:  # a bug here must not take the device offline for good
                log.exception("%s: MQTT loop failed; reconnecting", self.device)
                self._lost("internal error")
        try:
            self._shutdown()
        except Exception:
            log.exception("%s: MQTT shutdown failed", self.device)

    def _turn(self) -> None:
        if self._client is None:
            delay = self._next_attempt - self._clock()
            if delay > 0:
                self._stopping.wait(min(delay, 0.5))
            else:
                self._connect()
            return
        if self._connected:
            self._fill_window()
            self._maybe_status()
            self._check_ack_timeout()
        client = self._client
        if client is None:  # the connection was lost while sending
            return
        rc = client.loop(timeout=0.05 if self._connected else 0.2)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and client is self._client:
            self._lost(f"network loop: {mqtt.error_string(rc)}")

    def _new_client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device, clean_session=False,
                        protocol=MQTTProtocolVersion.MQTTv311, reconnect_on_failure=False)
        c.enable_logger(logging.getLogger("vigil.edge.paho"))
        _credentials(c, self.cfg)
        c.will_set(self._topic_status, wire.encode_status(wire.Status("offline", self.version)),
                   qos=1, retain=True)
        c.connect_timeout = self.cfg.connect_timeout_s
        c.max_inflight_messages_set(self.cfg.inflight_batches + 16)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _connect(self) -> None:
        client = self._new_client()
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._schedule_reconnect(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}")
            return
        sock: Any = client.socket()
        if sock is not None:  # no Nagle: a PUBACK then a PUBLISH would wait for a delayed TCP ack
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client  # CONNACK arrives in loop(); _on_connect follows

    def _schedule_reconnect(self, why: str) -> None:
        delay = backoff_delay(self._attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        (log.warning if self._attempt < 3 or self._attempt % 10 == 0 else log.debug)(
            "%s: %s; retrying in %.1f s", self.device, why, delay)
        self._attempt += 1
        self._next_attempt = self._clock() + delay

    def _lost(self, why: str) -> None:
        client, self._client = self._client, None
        was = self._connected
        self._connected = False
        self._window.clear()
        if client is not None and client.socket() is not None:  # close it now, not at collection
            with contextlib.suppress(Exception):
                client.disconnect()  # paho sends DISCONNECT and closes the socket
        if was:
            log.warning("%s: disconnected from %s:%d (%s)", self.device, self.cfg.host, self.cfg.port, why)
        self._schedule_reconnect(why)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._lost(f"connection refused: {reason}")
            return
        self._connected = True
        self._attempt = 0
        self.connects += 1
        log.info("%s: connected to %s:%d (session present: %s)", self.device, self.cfg.host,
                 self.cfg.port, flags.session_present)
        client.subscribe([(self._topic_ack, 1), (self._topic_config, 1)])
        # the outbox is the source of truth: resend everything not acked, oldest first
        self._restart_window()
        self._publish_status()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if client is self._client and not self._stopping.is_set():
            self._lost(f"disconnected: {reason}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._topic_ack:
            try:
                seq = wire.decode_ack(bytes(msg.payload))
            except wire.WireError as exc:
                log.warning("%s: ignoring a bad ack: %s", self.device, exc)
                return
            self._on_ack(seq)
        elif msg.topic == self._topic_config:
            try:
                doc = wire.decode_config(bytes(msg.payload))
            except wire.WireError as exc:
                log.warning("%s: ignoring remote config: %s", self.device, exc)
                return
            if self.on_remote_config is not None:
                self.on_remote_config(doc)

    def _restart_window(self) -> None:
        self._window.clear()
        self._last_sent = self.outbox.acked
        self._probing, self._probe_last = True, None

    def _on_ack(self, seq: int) -> None:
        self.outbox.ack(seq)
        acked = self.outbox.acked
        if self._probing and self._probe_last is not None and acked >= self._probe_last:
            self._probing = False  # the gateway is listening: open the window
        while self._window and self._window[0].last <= acked:
            self._window.popleft()
        if self._last_sent < acked:
            self._last_sent = acked

    def _fill_window(self) -> None:
        assert self._client is not None
        while len(self._window) < (1 if self._probing else self.cfg.inflight_batches):
            after = max(self._last_sent, self.outbox.acked)
            batch = self.outbox.next_batch(self.batch_max_events, wire.MAX_EVENTS_PAYLOAD, after_seq=after)
            if not batch:
                return
            info = self._client.publish(self._topic_events, wire.encode_events(self.device, batch), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(f"publish failed: {mqtt.error_string(info.rc)}")
                return
            self._window.append(_Batch(batch[0].seq, batch[-1].seq, self._clock()))
            if self._probing and self._probe_last is None:
                self._probe_last = batch[-1].seq
            self._last_sent = batch[-1].seq
            self.batches_sent += 1
            self.events_sent += len(batch)

    def _check_ack_timeout(self) -> None:
        if self._window and self._clock() - self._window[0].sent_at > self.cfg.ack_timeout_s:
            log.warning("%s: no ack for seq %d..%d in %.1f s; sending again from seq %d", self.device,
                        self._window[0].first, self._window[0].last, self.cfg.ack_timeout_s,
                        self.outbox.acked + 1)
            self.resends += 1
            self._restart_window()

    def _maybe_status(self) -> None:
        if self._status_requested or self._clock() >= self._next_status:
            self._publish_status()

    def status(self, state: str = "online") -> wire.Status:
        st = self.outbox.stats()
        extra = {"next_seq": st.next_seq, "acked": st.acked, "dropped_full": st.dropped_full,
                 "dropped_age": st.dropped_age, "dropped_oversize": st.dropped_oversize,
                 "connects": self.connects, "resends": self.resends, **self.status_extra()}
        return wire.Status(state, self.version, st.depth, st.bytes, st.dropped, int(time.time() * 1000), extra)

    def _publish_status(self, state: str = "online") -> mqtt.MQTTMessageInfo | None:
        self._status_requested = False
        self._next_status = self._clock() + self.status_interval_s
        if self._client is None:
            return None
        return self._client.publish(self._topic_status, wire.encode_status(self.status(state)), qos=1, retain=True)

    def _shutdown(self) -> None:
        client = self._client
        if client is None:
            return
        if self._connected:
            info = self._publish_status("offline")
            deadline = self._clock() + 2.0
            while info is not None and not info.is_published() and self._clock() < deadline:
                if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if client.socket() is not None:
                client.disconnect()
        self._client = None
        self._connected = False


def probe_connection(config: Config, timeout: float = 10.0) -> str | None:
    """Log in once with the device's credentials (as ``<id>-check``, a clean session, so a
    running agent's session is left alone). None when the broker accepted, else why not."""
    cfg = config.mqtt
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{config.device.id}-check", clean_session=True,
                    protocol=MQTTProtocolVersion.MQTTv311, reconnect_on_failure=False)
    result: list[str | None] = []
    c.on_connect = lambda cl, u, f, reason, p: result.append(f"refused: {reason}" if reason.is_failure else None)
    c.connect_timeout = min(timeout, cfg.connect_timeout_s)
    try:
        _credentials(c, cfg)
        c.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
        deadline = time.monotonic() + timeout
        while not result and time.monotonic() < deadline:
            if c.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"cannot connect: {exc}"
    finally:
        if c.socket() is not None:
            c.disconnect()
    if not result:
        return f"no answer in {timeout:g} s"
    return result[0]
