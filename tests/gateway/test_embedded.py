"""The embedded MQTT broker (`vigil gateway mqtt`, amqtt) with the registry as its
authority: the same flow and the same refusals as with Mosquitto."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import wire
from gateway.registry import Registry
from tests.conftest import ROOT, BrokerProcess, free_port, stop_process, wait_for_port
from tests.gateway.conftest import BridgeProcess, Device, Site, by_device, read_topic

pytest.importorskip("amqtt")


class EmbeddedMqtt:
    def __init__(self, workdir: Path, registry: Path) -> None:
        self.port = free_port()
        self.registry = registry
        self.log_path = workdir / "embedded-mqtt.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedMqtt:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "-v", "gateway", "mqtt",
                                      "--listen", f"127.0.0.1:{self.port}", "--registry", str(self.registry)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def embedded_site(tmp_path: Path) -> Iterator[Site]:
    registry = Registry(tmp_path / "devices.db")
    pw = tmp_path / "bridge.password"
    pw.write_text(registry.set_bridge_user("vigil-bridge") + "\n")
    mqtt = EmbeddedMqtt(tmp_path, tmp_path / "devices.db").start()
    try:
        yield Site(mqtt, registry, pw)  # type: ignore[arg-type]
    finally:
        mqtt.stop()


@pytest.fixture
def embedded_bridge(embedded_site: Site, broker: BrokerProcess, tmp_path: Path) -> Iterator[BridgeProcess]:
    b = BridgeProcess(embedded_site, broker.bootstrap, tmp_path, extra=("--mqtt-version", "3.1.1")).start()
    try:
        yield b
        assert b.proc is not None and b.proc.poll() is None, b.log()[-3000:]
    finally:
        b.stop()


def test_devices_through_the_embedded_broker_reach_the_log_in_order(
        embedded_site: Site, broker: BrokerProcess, embedded_bridge: BridgeProcess) -> None:
    port = embedded_site.mosquitto.port
    devices = [Device(port, d, embedded_site.add_device(d)).start() for d in ("truck-1", "bed-2")]
    try:
        for _ in range(3):
            for d in devices:
                d.send(100)
        for d in devices:
            d.settle(60)
    finally:
        for d in devices:
            d.stop()
    seqs = by_device(read_topic(broker.bootstrap, "telemetry", min_count=600))
    assert seqs == {"truck-1": list(range(1, 301)), "bed-2": list(range(1, 301))}


def test_the_embedded_broker_applies_the_registry(
        embedded_site: Site, broker: BrokerProcess, embedded_bridge: BridgeProcess) -> None:
    port = embedded_site.mosquitto.port
    good = Device(port, "truck-1", embedded_site.add_device("truck-1")).start()
    evil = Device(port, "truck-2", embedded_site.add_device("truck-2")).start()
    wrong = Device(port, "truck-1", "not-the-password").start(wait=False)
    try:
        forged = wire.encode_events("truck-1", [wire.Event("truck-1", 999, int(time.time() * 1000), "gps", {})])
        evil.publish_raw(forged, wire.events_topic("truck-1")).wait_for_publish(5)
        good.send(30)
        good.settle(30)
        time.sleep(0.5)
        assert not wrong.connected.is_set()
        embedded_site.registry.revoke("truck-2")
        time.sleep(1.5)  # the plugins re-read the registry every second
        evil.send(10)
        time.sleep(1)
        assert evil.acked == 0
    finally:
        for d in (good, evil, wrong):
            d.stop()
    assert by_device(read_topic(broker.bootstrap, "telemetry", min_count=30)) == {"truck-1": list(range(1, 31))}


def test_a_bad_login_with_a_devices_id_does_not_knock_it_off(embedded_site: Site) -> None:
    port = embedded_site.mosquitto.port
    real = Device(port, "truck-1", embedded_site.add_device("truck-1")).start()
    impostor = Device(port, "truck-1", "guess").start(wait=False)
    try:
        time.sleep(2)  # the impostor retries several times meanwhile
        assert not impostor.connected.is_set()
        assert real.connected.is_set() and real.disconnects == 0
    finally:
        impostor.stop()
        real.stop()
