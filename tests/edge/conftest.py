"""Edge fixtures: a real Mosquitto per test on a free loopback port, and a fake gateway."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge import wire
from tests.conftest import free_port, start_logged, stop_process

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """Debian's mosquitto with a generated config, on 127.0.0.1 only, stopped by PID."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.extra_conf = extra_conf  # more listeners (with per_listener_settings), TLS, passwords
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            ("per_listener_settings true\n" if self.extra_conf else "")
            # as root, mosquitto would switch to its own user, who cannot read the test's tmp dir
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"  # a restart loses sessions and queued messages: the hard case
            "max_queued_messages 100000\n"
            "set_tcp_nodelay true\n"  # no Nagle delay on the ack round trip (40 ms stalls)
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n" + self.extra_conf)
        self.proc = start_logged([MOSQUITTO, "-c", str(self.conf)], self.log_path, self.port)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    m = Mosquitto(tmp_path / "mqtt").start()
    try:
        yield m
    finally:
        m.stop()


@dataclass
class Received:
    seq: int
    data: dict[str, object]
    at: float
    acked_before: int  # the highest seq the gateway had acked when this copy arrived
    ts: int = 0  # the event's time (ms, wall clock)
    wall: float = 0.0  # when it arrived (s, wall clock)


@dataclass
class FakeGateway:
    """Subscribes to vigil/+/events and acks every batch with its last seq (wire.encode_ack),
    as the real gateway will once the log committed it. ``acking`` may be switched off."""

    port: int
    acking: bool = True
    ack_delay: float = 0.0  # seconds between a batch arriving and its ack (a log commit's latency)
    received: dict[str, list[Received]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, wire.Status] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)  # MQTT messages received per device
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: mqtt.Client | None = None

    def start(self) -> FakeGateway:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-gateway-{self.port}", clean_session=False)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 0.5)
        c.connect_async("127.0.0.1", self.port, keepalive=10)
        c.loop_start()
        self.client = c
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        sock = client.socket()
        if sock is not None:  # as a gateway should: acks leave at once, not after a delayed TCP ack
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([("vigil/+/events", 1), ("vigil/+/status", 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device, channel = wire.parse_topic(msg.topic)
        if channel == "status":
            with self.lock:
                self.statuses[device] = wire.decode_status(msg.payload)
            return
        batch = wire.decode_events(msg.payload)
        assert not batch.invalid, batch.invalid
        with self.lock:
            self.batches[device] = self.batches.get(device, 0) + 1
            got = self.received.setdefault(device, [])
            acked = self.acked.get(device, 0)
            now = time.monotonic()
            wall = time.time()
            got += [Received(e.seq, e.data, now, acked, e.ts, wall) for e in batch.events]
            if self.acking and batch.events:
                last = batch.events[-1].seq
                self.acked[device] = max(acked, last)
                if self.ack_delay:
                    timer = threading.Timer(self.ack_delay, client.publish,
                                            (wire.ack_topic(device), wire.encode_ack(last), 1))
                    timer.daemon = True
                    timer.start()
                else:
                    client.publish(wire.ack_topic(device), wire.encode_ack(last), qos=1)

    def seqs(self, device: str) -> list[int]:
        with self.lock:
            return [r.seq for r in self.received.get(device, [])]

    def copies(self, device: str) -> list[Received]:
        with self.lock:
            return list(self.received.get(device, []))


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[FakeGateway]:
    g = FakeGateway(mosquitto.port).start()
    try:
        yield g
    finally:
        g.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def device_toml(tmp: Path, device: str, port: int, *, rate: float = 200, max_bytes: int = 64 * 1024 * 1024,
                status_interval_s: float = 60, extra_sensors: str = "", ack_timeout_s: float = 5,
                batch_max_events: int = 200, limit: int | None = None, inflight_batches: int = 4) -> Path:
    path = tmp / f"{device}.toml"
    path.write_text(f"""
[device]
id = "{device}"
kind = "vehicle"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 10
reconnect_min_s = 0.1
reconnect_max_s = 0.5
ack_timeout_s = {ack_timeout_s}
inflight_batches = {inflight_batches}
status_interval_s = {status_interval_s}
connect_timeout_s = 2

[outbox]
path = "{device}.outbox.sqlite"
max_bytes = {max_bytes}
batch_max_events = {batch_max_events}

[agent]
poll_interval_s = 0.02
sensor_modules = ["tests.edge.counter_sensor"]

[[sensors]]
name = "counter"
type = "counter"
rate = {rate}
{f"limit = {limit}" if limit is not None else ""}
period_s = 0
deadband = 0
{extra_sensors}
""")
    return path
