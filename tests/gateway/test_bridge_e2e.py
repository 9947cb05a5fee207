"""Devices -> real Mosquitto -> `vigil gateway bridge` -> the log (a real `vigil broker`)."""

from __future__ import annotations

import time

from tests.conftest import BrokerProcess
from tests.gateway.conftest import BridgeProcess, Device, Site, by_device, read_topic


def test_every_event_reaches_telemetry_keyed_by_device_in_seq_order_and_is_acked(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    devices = [Device(site.mosquitto.port, d, site.add_device(d)).start()
               for d in ("truck-1", "truck-2", "bed-7")]
    try:
        for _ in range(5):
            for d in devices:
                d.send(100)
        for d in devices:
            d.settle(60)
            assert d.acked == 500
            assert d.acks == sorted(d.acks), "acks only move forward"
    finally:
        for d in devices:
            d.stop()
    records = read_topic(broker.bootstrap, "telemetry", min_count=1500)
    seqs = by_device(records)
    assert set(seqs) == {"truck-1", "truck-2", "bed-7"}
    for device, got in seqs.items():
        assert got == list(range(1, 501)), device
    first = records[0]
    event = first.json()
    assert event["device"] == first.key and event["kind"] == "counter"
    assert first.timestamp == event["ts"]  # record time is the event time
    assert first.headers["seq"] == str(event["seq"]).encode()
    assert first.headers["kind"] == b"counter" and first.headers["schema"] == b"1"
    assert "clock-skew" not in first.headers
    assert read_topic(broker.bootstrap, "telemetry.rejected", idle=0.5) == []


def test_clock_skew_is_flagged_not_rewritten(site: Site, broker: BrokerProcess, bridge: BridgeProcess) -> None:
    from edge import wire

    d = Device(site.mosquitto.port, "truck-9", site.add_device("truck-9")).start()
    try:
        future = int(time.time() * 1000) + 3600_000
        d.publish_raw(wire.encode_events("truck-9", [wire.Event("truck-9", 1, future, "gps", {"lat": 1.0})]))
        d.next_seq = 2
        d.settle(30)
    finally:
        d.stop()
    [rec] = read_topic(broker.bootstrap, "telemetry", min_count=1)
    assert rec.timestamp == future and rec.json()["ts"] == future
    assert 3500_000 < int(rec.headers["clock-skew"]) <= 3600_000
