"""Gateway fixtures: a real Mosquitto with password and ACL files written by the registry,
the bridge as a real `vigil gateway bridge` process, simulated devices, a log reader."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge import wire
from gateway.registry import MosquittoFiles, Registry
from tests.conftest import ROOT, BrokerProcess, free_port, start_logged, stop_process

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class SecureMosquitto:
    """Debian's mosquitto on a free loopback port, with password_file, acl_file, a pid file
    and persistence in the test's directory; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.passwd = workdir / "passwd"
        self.acl = workdir / "acl"
        self.pid_file = workdir / "mosquitto.pid"
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def files(self) -> MosquittoFiles:
        return MosquittoFiles(self.passwd, self.acl, self.pid_file)

    def start(self) -> SecureMosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for f in (self.passwd, self.acl):
            if not f.exists():
                f.write_text("")
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "user root\n"  # pytest's tmp dirs are 0700: stay the test's user, root or not
            "allow_anonymous false\n"
            f"password_file {self.passwd}\n"
            f"acl_file {self.acl}\n"
            f"pid_file {self.pid_file}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type all\n")
        self.proc = start_logged([MOSQUITTO, "-c", str(self.conf)], self.log_path, self.port)
        wait_until(lambda: self.pid_file.exists() and self.pid_file.read_text().strip() != "",
                   5, "mosquitto's pid file")
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[SecureMosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    m = SecureMosquitto(tmp_path / "mqtt").start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def registry(tmp_path: Path, mosquitto: SecureMosquitto) -> Registry:
    return Registry(tmp_path / "devices.db", mosquitto.files)


@dataclass
class Site:
    """A registry, a secured Mosquitto and the bridge user's password file."""

    mosquitto: SecureMosquitto
    registry: Registry
    bridge_password_file: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def add_device(self, device: str, kind: str = "vehicle") -> str:
        self.passwords[device] = self.registry.add(device, kind, f"{device} (test)")
        time.sleep(0.3)  # SIGHUP is asynchronous: let mosquitto re-read its files
        return self.passwords[device]


@pytest.fixture
def site(tmp_path: Path, mosquitto: SecureMosquitto, registry: Registry) -> Site:
    pw = tmp_path / "bridge.password"
    pw.write_text(registry.set_bridge_user("vigil-bridge") + "\n")
    time.sleep(0.3)
    return Site(mosquitto, registry, pw)


class BridgeProcess:
    """`python -m deploy.cli gateway bridge` as a child process."""

    def __init__(self, site: Site, bootstrap: str, workdir: Path, client_id: str = "bridge-test",
                 extra: tuple[str, ...] = ()) -> None:
        self.site, self.bootstrap, self.client_id, self.extra = site, bootstrap, client_id, extra
        self.log_path = workdir / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "-v", "gateway", "bridge",
             "--mqtt", f"127.0.0.1:{self.site.mosquitto.port}", "--bootstrap", self.bootstrap,
             "--username", "vigil-bridge", "--password-file", str(self.site.bridge_password_file),
             "--client-id", self.client_id, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_until(lambda: "mqtt connected" in self.log() or self.proc.poll() is not None,  # type: ignore[union-attr]
                   30, "the bridge to connect")
        assert self.proc.poll() is None, self.log()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def bridge(site: Site, broker: BrokerProcess, tmp_path: Path) -> Iterator[BridgeProcess]:
    b = BridgeProcess(site, broker.bootstrap, tmp_path).start()
    try:
        yield b
        assert b.proc is not None and b.proc.poll() is None, f"the bridge died:\n{b.log()[-3000:]}"
    finally:
        b.stop()


class Device:
    """A device as the edge agent behaves on the wire: its own credentials, a persistent
    session, batches of edge.wire events on vigil/<id>/events at QoS 1, acks read from
    vigil/<id>/ack; everything not acked within ``resend_after`` seconds is sent again
    (what the agent's outbox does), so the test can assert that nothing is lost."""

    def __init__(self, port: int, device: str, password: str, *, batch: int = 20,
                 resend_after: float = 3.0, event_bytes: int = 0) -> None:
        self.port, self.id, self.password = port, device, password
        self.batch, self.resend_after = batch, resend_after
        self.pad = "x" * event_bytes
        self.next_seq = 1
        self.acked = 0
        self.acks: list[int] = []
        self.connected = threading.Event()
        self.connect_result: object = None
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, clean_session=False,
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.username_pw_set(device, password)
        self.client.max_inflight_messages_set(50)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.disconnects = 0
        self.client.on_disconnect = self._on_disconnect

    def start(self, wait: bool = True) -> Device:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if wait:
            assert self.connected.wait(10), f"{self.id} could not connect: {self.connect_result}"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        self.connect_result = reason
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not getattr(reason, "is_failure", False):
            client.subscribe(wire.ack_topic(self.id), qos=1)
            self.connected.set()

    def _on_disconnect(self, *args: object) -> None:
        self.connected.clear()
        self.disconnects += 1

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        seq = wire.decode_ack(msg.payload)
        with self.lock:
            self.acks.append(seq)
            self.acked = max(self.acked, seq)

    def events(self, first: int, last: int) -> list[wire.Event]:
        now = int(time.time() * 1000)
        return [wire.Event(self.id, s, now, "counter", {"n": s, "pad": self.pad} if self.pad else {"n": s})
                for s in range(first, last + 1)]

    def publish_raw(self, payload: bytes, topic: str | None = None) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic or wire.events_topic(self.id), payload, qos=1)

    def send(self, n: int) -> None:
        """Publish ``n`` new events in batches."""
        last = self.next_seq + n - 1
        self._publish_range(self.next_seq, last)
        self.next_seq = last + 1

    def _publish_range(self, first: int, last: int) -> None:
        for start in range(first, last + 1, self.batch):
            end = min(start + self.batch - 1, last)
            self.publish_raw(wire.encode_events(self.id, self.events(start, end)))

    def settle(self, timeout: float = 60.0) -> int:
        """Wait until every event sent is acked, resending the unacked ones now and then as
        the agent does. Returns how many times it resent."""
        deadline = time.monotonic() + timeout
        resends = 0
        last_progress, seen = time.monotonic(), self.acked
        while self.acked < self.next_seq - 1:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.id}: acked {self.acked} of {self.next_seq - 1}")
            if self.acked != seen:
                seen, last_progress = self.acked, time.monotonic()
            elif time.monotonic() - last_progress > self.resend_after and self.connected.is_set():
                self._publish_range(self.acked + 1, self.next_seq - 1)
                resends += 1
                last_progress = time.monotonic()
            time.sleep(0.05)
        return resends


@dataclass(frozen=True)
class LogRecord:
    key: str | None
    value: bytes
    timestamp: int
    headers: dict[str, bytes]

    def json(self) -> dict[str, object]:
        return json.loads(self.value)  # type: ignore[no-any-return]


def read_topic(bootstrap: str, topic: str, *, min_count: int = 0, timeout: float = 30.0,
               idle: float = 1.0) -> list[LogRecord]:
    """Every record of ``topic`` (partition 0) from the beginning: waits for ``min_count``,
    then until nothing new arrives for ``idle`` seconds."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[LogRecord] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(1000, 0.2)
            for m in msgs:
                if m.error():
                    continue
                key = m.key()
                out.append(LogRecord(key.decode() if key else None, m.value(), m.timestamp()[1],
                                     {k: v for k, v in (m.headers() or [])}))
            if any(not m.error() for m in msgs):
                last_new = time.monotonic()
            elif len(out) >= min_count and time.monotonic() - last_new > idle:
                break
    finally:
        c.close()
    return out


def by_device(records: list[LogRecord]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r.key or "", []).append(int(r.json()["seq"]))  # type: ignore[call-overload]
    return out
