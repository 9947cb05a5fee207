"""Device status: the agents' retained ``vigil/<id>/status`` messages (and last wills)
through real Mosquitto and `vigil gateway bridge` into the compacted ``device-status``
topic; malformed ones into ``telemetry.rejected``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource

from edge import wire
from gateway.bridge import STATUS_FIELDS, classify_status
from tests.conftest import ROOT, BrokerProcess
from tests.gateway.conftest import BridgeProcess, Device, LogRecord, Site, read_topic, wait_until

NOW = 1_764_072_000_000


# --- the pure core -----------------------------------------------------------------------


def test_a_status_becomes_one_record_keyed_by_the_device() -> None:
    payload = wire.encode_status(wire.Status("online", "1.4.0", 12, 3400, 2, NOW - 50, {"connects": 3}))
    c = classify_status("vigil/truck-7/status", payload, now_ms=NOW)
    [rec] = c.records
    assert (rec.topic, rec.key, rec.timestamp_ms) == ("device-status", b"truck-7", NOW)
    assert json.loads(rec.value) == {"device": "truck-7", "state": "online", "version": "1.4.0",
                                     "outbox_depth": 12, "outbox_bytes": 3400, "dropped": 2,
                                     "ts": NOW - 50, "received": NOW}
    assert tuple(json.loads(rec.value)) == STATUS_FIELDS
    assert c.device == "truck-7" and c.ack_seq is None and not c.rejected
    assert rec.header("retained") is None
    [again] = classify_status("vigil/truck-7/status", payload, now_ms=NOW, retained=True).records
    assert again.value == rec.value and again.header("retained") == b"1"


def test_a_last_will_has_no_agent_time() -> None:
    will = wire.encode_status(wire.Status("offline", "1.4.0"))
    [rec] = classify_status("vigil/bed-3/status", will, now_ms=NOW, status_topic="st").records
    assert rec.topic == "st"
    assert json.loads(rec.value)["state"] == "offline" and json.loads(rec.value)["ts"] == 0


def test_malformed_statuses_are_rejected_with_a_reason() -> None:
    cases = {
        b"not json": "bad-status",
        b'{"state": "sleeping"}': "bad-status",
        b'{"state": "online", "outbox_depth": "many"}': "bad-status",
        b'{"state": "online", "extra": "oops"}': "bad-status",
        b"": "bad-status",
        b'{"state": "online", "version": "' + b"x" * 70_000 + b'"}': "bad-status",
    }
    for payload, reason in cases.items():
        c = classify_status("vigil/truck-7/status", payload, now_ms=NOW)
        [rec] = c.records
        assert rec.topic == "telemetry.rejected" and rec.key == b"truck-7", payload
        assert rec.header("reason") == reason.encode() and rec.header("detail"), payload
        assert len(rec.value) <= 1024
        assert c.rejected == {reason: 1}
    c = classify_status("vigil/truck-7/events", b'{"state": "online"}', now_ms=NOW)
    assert c.records[0].header("reason") == b"bad-topic" and c.records[0].key is None


# --- end to end --------------------------------------------------------------------------


def _agent_config(tmp_path: Path, site: Site, device: str) -> Path:
    (tmp_path / f"{device}.secret").write_text(site.add_device(device) + "\n")
    config = tmp_path / f"{device}.toml"
    config.write_text(f"""
[device]
id = "{device}"
kind = "vehicle"

[mqtt]
host = "127.0.0.1"
port = {site.mosquitto.port}
username = "{device}"
password_file = "{device}.secret"
keepalive = 10
reconnect_min_s = 0.1
reconnect_max_s = 0.5
status_interval_s = 60

[outbox]
path = "{device}.outbox.sqlite"

[agent]
poll_interval_s = 0.02
sensor_modules = ["tests.edge.counter_sensor"]

[[sensors]]
name = "counter"
type = "counter"
rate = 50
limit = 20
period_s = 0
deadband = 0
""")
    return config


def _statuses(bootstrap: str, device: str, min_count: int) -> list[LogRecord]:
    return [r for r in read_topic(bootstrap, "device-status", min_count=min_count, idle=0.5)
            if r.key == device]


def test_an_agent_online_then_killed_leaves_online_then_its_last_will_in_device_status(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess, tmp_path: Path) -> None:
    config = _agent_config(tmp_path, site, "truck-7")
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    agent = subprocess.Popen([sys.executable, "-m", "deploy.cli", "edge", "run", "--config", str(config)],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_until(lambda: any(r.json()["state"] == "online" for r in _statuses(broker.bootstrap, "truck-7", 1)),
                   30, "truck-7's online status in device-status")
    finally:
        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: Mosquitto publishes the last will
        agent.wait(10)
    wait_until(lambda: _statuses(broker.bootstrap, "truck-7", 2)[-1].json()["state"] == "offline",
               30, "truck-7's last will in device-status")
    records = _statuses(broker.bootstrap, "truck-7", 2)
    online = next(r for r in records if r.json()["state"] == "online")
    value = online.json()
    assert set(value) == set(STATUS_FIELDS)
    assert value["device"] == "truck-7" and value["version"]
    assert isinstance(value["outbox_depth"], int) and isinstance(value["dropped"], int)
    assert abs(int(value["ts"]) - int(value["received"])) < 60_000  # type: ignore[call-overload]
    assert online.timestamp == value["received"]
    assert "retained" not in online.headers  # sent while the bridge listened
    will = records[-1].json()
    assert will["state"] == "offline" and will["ts"] == 0  # a will is composed at connect
    assert will["received"] >= value["received"]  # type: ignore[operator]
    # the topic was created compacted
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = next(iter(admin.describe_configs([ConfigResource("TOPIC", "device-status")]).values())).result(10)
    assert configs["cleanup.policy"].value == "compact"


def test_a_malformed_status_is_rejected_and_a_device_cannot_speak_for_another(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    site.add_device("truck-2")
    d = Device(site.mosquitto.port, "truck-1", site.add_device("truck-1")).start()
    try:
        d.client.publish(wire.status_topic("truck-1"), b'{"state": "asleep"}', qos=1, retain=True).wait_for_publish(5)
        # the ACL lets truck-1 publish only its own status: Mosquitto drops this one
        d.client.publish(wire.status_topic("truck-2"), wire.encode_status(wire.Status("offline", "evil")),
                         qos=1, retain=True).wait_for_publish(5)
        d.client.publish(wire.status_topic("truck-1"),
                         wire.encode_status(wire.Status("online", "2.0", ts=int(time.time() * 1000))),
                         qos=1, retain=True).wait_for_publish(5)
    finally:
        d.stop()
    [rejected] = read_topic(broker.bootstrap, "telemetry.rejected", min_count=1)
    assert rejected.key == "truck-1" and rejected.headers["reason"] == b"bad-status"
    assert rejected.headers["mqtt-topic"] == b"vigil/truck-1/status"
    assert rejected.value == b'{"state": "asleep"}'
    statuses = read_topic(broker.bootstrap, "device-status", min_count=1)
    assert [(r.key, r.json()["state"], r.json()["version"]) for r in statuses] == [("truck-1", "online", "2.0")]


def test_a_new_bridge_writes_the_retained_statuses_it_finds(
        site: Site, broker: BrokerProcess, tmp_path: Path) -> None:
    """Statuses published while no bridge runs are retained by Mosquitto and written when one starts."""
    d = Device(site.mosquitto.port, "bed-4", site.add_device("bed-4")).start()
    try:
        d.client.publish(wire.status_topic("bed-4"), wire.encode_status(wire.Status("online", "3.1", 5, 500)),
                         qos=1, retain=True).wait_for_publish(5)
    finally:
        d.stop()
    b = BridgeProcess(site, broker.bootstrap, tmp_path, client_id="late-bridge").start()
    try:
        [rec] = read_topic(broker.bootstrap, "device-status", min_count=1)
    finally:
        b.stop()
    assert rec.key == "bed-4" and rec.headers["retained"] == b"1"
    assert {k: rec.json()[k] for k in ("state", "version", "outbox_depth", "outbox_bytes")} == {
        "state": "online", "version": "3.1", "outbox_depth": 5, "outbox_bytes": 500}
    # the same bridge back on its MQTT 5 session: the retained statuses are not written again
    b.start()
    try:
        d = Device(site.mosquitto.port, "bed-5", site.add_device("bed-5")).start()
        try:
            d.client.publish(wire.status_topic("bed-5"), wire.encode_status(wire.Status("online", "3.2")),
                             qos=1, retain=True).wait_for_publish(5)
        finally:
            d.stop()
        records = read_topic(broker.bootstrap, "device-status", min_count=2)
    finally:
        b.stop()
    assert [(r.key, "retained" in r.headers) for r in records] == [("bed-4", True), ("bed-5", False)]
