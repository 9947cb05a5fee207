"""Who may publish what, and what the bridge does with what it refuses: each bad case
is handled as specified while a good device's traffic goes through untouched."""

from __future__ import annotations

import json
import time

from edge import wire
from tests.conftest import BrokerProcess
from tests.gateway.conftest import BridgeProcess, Device, Site, by_device, read_topic, wait_until


def _rejected(broker: BrokerProcess, n: int) -> list:  # type: ignore[type-arg]
    return read_topic(broker.bootstrap, "telemetry.rejected", min_count=n, idle=0.5)


def test_a_device_cannot_publish_on_another_devices_topic(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    good = Device(site.mosquitto.port, "truck-1", site.add_device("truck-1")).start()
    evil = Device(site.mosquitto.port, "truck-2", site.add_device("truck-2")).start()
    try:
        # truck-2 forges truck-1's events on truck-1's topic: the ACL drops it at Mosquitto
        forged = wire.encode_events("truck-1", [wire.Event("truck-1", 999, int(time.time() * 1000), "gps", {})])
        evil.publish_raw(forged, wire.events_topic("truck-1")).wait_for_publish(5)
        # and on its own topic claiming to be truck-1: the bridge refuses it (identity)
        evil.publish_raw(forged).wait_for_publish(5)
        good.send(50)
        good.settle(30)
    finally:
        good.stop()
        evil.stop()
    seqs = by_device(read_topic(broker.bootstrap, "telemetry", min_count=50))
    assert seqs == {"truck-1": list(range(1, 51))}  # no 999, nothing keyed truck-2
    [rej] = _rejected(broker, 1)
    assert rej.headers["reason"] == b"identity" and rej.key == "truck-2"
    assert evil.acks == []  # nothing of a forged batch is acked


def test_a_wrong_password_cannot_connect(site: Site) -> None:
    site.add_device("truck-1")
    d = Device(site.mosquitto.port, "truck-1", "not-the-password").start(wait=False)
    try:
        time.sleep(1.5)
        assert not d.connected.is_set()
        assert d.connect_result is not None and d.connect_result.is_failure  # type: ignore[attr-defined]
    finally:
        d.stop()


def test_a_revoked_device_is_cut_off_within_seconds(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    d = Device(site.mosquitto.port, "truck-1", site.add_device("truck-1")).start()
    try:
        d.send(20)
        d.settle(30)
        site.registry.revoke("truck-1")
        wait_until(lambda: not d.connected.is_set(), 5, "mosquitto to drop the revoked device")
        time.sleep(1)
        assert not d.connected.is_set(), "a revoked device cannot reconnect"
        d.send(20)  # queued by paho, never accepted
        time.sleep(1)
    finally:
        d.stop()
    assert by_device(read_topic(broker.bootstrap, "telemetry", min_count=20)) == {"truck-1": list(range(1, 21))}
    assert not site.registry.get("truck-1").active


def _good_and(site: Site, broker: BrokerProcess, bad: bytes) -> tuple[Device, list]:  # type: ignore[type-arg]
    good = Device(site.mosquitto.port, "good-1", site.add_device("good-1")).start()
    bad_dev = Device(site.mosquitto.port, "bad-1", site.add_device("bad-1")).start()
    try:
        good.send(40)
        bad_dev.publish_raw(bad).wait_for_publish(10)
        good.send(40)
        good.settle(30)
    finally:
        good.stop()
        bad_dev.stop()
    assert by_device(read_topic(broker.bootstrap, "telemetry", min_count=80)) == {"good-1": list(range(1, 81))}
    return good, _rejected(broker, 1)


def test_a_10_mb_payload_is_rejected_and_good_traffic_flows(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    _, [rej] = _good_and(site, broker, b"{" + b" " * (10 * 1024 * 1024))
    assert rej.headers["reason"] == b"oversize" and rej.key == "bad-1"
    assert rej.headers["size"] == str(10 * 1024 * 1024 + 1).encode()
    assert len(rej.value) <= 1024  # a snippet, not 10 MB in the log


def test_invalid_json_is_rejected_and_good_traffic_flows(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    _, [rej] = _good_and(site, broker, b'{"v": 1, "device": "bad-1", "events": [')
    assert rej.headers["reason"] == b"bad-envelope" and rej.value.startswith(b'{"v": 1')
    assert b"not JSON" in rej.headers["detail"]


def test_one_bad_event_in_a_batch_is_rejected_alone(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    d = Device(site.mosquitto.port, "bed-3", site.add_device("bed-3", "patient")).start()
    try:
        now = int(time.time() * 1000)
        batch = {"v": 1, "device": "bed-3", "events": [
            {"seq": 1, "ts": now, "kind": "vitals", "data": {"hr": 70}},
            {"seq": 2, "ts": "yesterday", "kind": "vitals", "data": {"hr": 71}},
            {"seq": 3, "ts": now, "kind": "vitals", "data": {"hr": 72}}]}
        d.publish_raw(json.dumps(batch).encode())
        d.next_seq = 4
        d.settle(30)  # the ack covers seq 3: the bad event is settled in telemetry.rejected
    finally:
        d.stop()
    assert by_device(read_topic(broker.bootstrap, "telemetry", min_count=2)) == {"bed-3": [1, 3]}
    [rej] = _rejected(broker, 1)
    assert rej.headers["reason"] == b"invalid-event" and rej.headers["seq"] == b"2"
    assert json.loads(rej.value)["ts"] == "yesterday"
    assert b"ts must be" in rej.headers["detail"]


def test_the_bridge_user_alone_reads_every_devices_events(site: Site) -> None:
    """A device subscribing to vigil/+/events gets nothing: the ACL gives it only its own
    ack and config."""
    spy = Device(site.mosquitto.port, "spy-1", site.add_device("spy-1")).start()
    victim = Device(site.mosquitto.port, "truck-5", site.add_device("truck-5")).start()
    seen: list[str] = []
    spy.client.on_message = lambda c, u, m: seen.append(m.topic)
    spy.client.subscribe("vigil/+/events", qos=1)
    try:
        time.sleep(0.5)
        victim.send(10)
        time.sleep(1)
    finally:
        spy.stop()
        victim.stop()
    assert seen == []


def test_a_bad_login_with_a_devices_id_does_not_knock_it_off(site: Site) -> None:
    real = Device(site.mosquitto.port, "truck-1", site.add_device("truck-1")).start()
    impostor = Device(site.mosquitto.port, "truck-1", "guess").start(wait=False)
    try:
        time.sleep(2)
        assert not impostor.connected.is_set()
        assert real.connected.is_set() and real.disconnects == 0
    finally:
        impostor.stop()
        real.stop()
