"""`vigil up`: the one-box appliance starts, devices' readings reach the log, it stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from deploy.up import find_mosquitto
from tests.conftest import ROOT, free_port, wait_for_port


@pytest.mark.parametrize("mqtt_broker", [
    pytest.param("mosquitto", marks=pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")),
    "embedded",
])
def test_vigil_up_brings_simulated_readings_into_the_log(tmp_path: Path, mqtt_broker: str) -> None:
    broker_port, mqtt_port = free_port(), free_port()
    out = open(tmp_path / "up.out", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "up", "--var", str(tmp_path / "var"),
         "--broker-port", str(broker_port), "--mqtt-port", str(mqtt_port),
         "--vehicles", "2", "--patients", "2", "--speedup", "5", "--mqtt-broker", mqtt_broker],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(broker_port, timeout=30, proc=proc)
        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{broker_port}", "group.id": "e2e",
                             "enable.auto.commit": False})
        seen: dict[str, list[int]] = {}
        deadline = time.monotonic() + 60
        assigned = False
        while time.monotonic() < deadline and (len(seen) < 4 or any(len(s) < 3 for s in seen.values())):
            if not assigned:
                md = consumer.list_topics("telemetry", timeout=10)
                parts = md.topics["telemetry"].partitions
                if parts:
                    consumer.assign([TopicPartition("telemetry", p, 0) for p in parts])
                    assigned = True
                continue
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    event = json.loads(m.value())
                    assert m.key().decode() == event["device"]
                    seen.setdefault(event["device"], []).append(event["seq"])
                else:
                    assert m.error().code() == KafkaError._PARTITION_EOF
        consumer.close()
        states = device_states(f"127.0.0.1:{broker_port}", {"veh-001", "bed-001"}, timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        out.close()
    log = (tmp_path / "up.out").read_text()
    assert sorted(seen) == ["bed-001", "bed-002", "veh-001", "veh-002"], log
    for device, seqs in seen.items():
        assert seqs == sorted(seqs), f"{device}: out of order"
    assert "Vigil is up" in log and code == 0
    # the processors turned the readings into device state
    assert states["veh-001"]["kind"] == "vehicle" and states["veh-001"]["window"]["count"] > 0, states
    assert states["bed-001"]["kind"] == "patient" and states["bed-001"]["latest"]["heart_rate"], states


def device_states(bootstrap: str, wanted: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """The first device-state record of each wanted device."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-state",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["device-state"])
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not wanted <= set(found):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                doc = json.loads(msg.value())
                found.setdefault(doc["device"], doc)
    finally:
        consumer.close()
    return found
