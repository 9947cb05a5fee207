"""What an operator sees: Prometheus metrics; and several bridges sharing the load."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from tests.conftest import BrokerProcess, free_port
from tests.gateway.conftest import BridgeProcess, Device, Site, by_device, read_topic, wait_until


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in metrics"
    return float(m.group(1))


def test_metrics_count_what_came_in_what_was_committed_and_what_was_refused(
        site: Site, broker: BrokerProcess, tmp_path: Path) -> None:
    port = free_port()
    bridge = BridgeProcess(site, broker.bootstrap, tmp_path, extra=("--metrics-port", str(port))).start()
    d = Device(site.mosquitto.port, "truck-1", site.add_device("truck-1")).start()
    try:
        d.send(100)
        d.publish_raw(b"garbage")
        d.settle(30)
        d._publish_range(81, 100)  # a resent copy of an acked batch

        def scrape() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

        wait_until(lambda: "vigil_bridge_duplicate_messages_total 1.0" in scrape(), 10, "the duplicate")
        text = scrape()
    finally:
        d.stop()
        bridge.stop()
    assert _metric(text, "vigil_bridge_events_in_total") == 120
    assert _metric(text, "vigil_bridge_mqtt_messages_total") == 7  # 5 + 1 resent batches of 20, garbage
    assert _metric(text, "vigil_bridge_records_committed_total", '{topic="telemetry"}') == 120
    assert _metric(text, "vigil_bridge_duplicate_messages_total") == 1
    assert _metric(text, "vigil_bridge_rejected_total", '{reason="bad-envelope"}') == 1
    assert _metric(text, "vigil_bridge_ack_latency_seconds_count") == 7
    assert _metric(text, "vigil_bridge_in_flight_messages") == 0


def test_two_bridges_split_the_load_through_a_shared_subscription(
        site: Site, broker: BrokerProcess, tmp_path: Path) -> None:
    bridges = [BridgeProcess(site, broker.bootstrap, tmp_path, client_id=f"bridge-{i}").start()
               for i in (1, 2)]
    devices = [Device(site.mosquitto.port, f"truck-{i}", site.add_device(f"truck-{i}")).start()
               for i in range(1, 5)]
    try:
        for _ in range(5):
            for d in devices:
                d.send(40)
        for d in devices:
            d.settle(60)
    finally:
        for d in devices:
            d.stop()
        for b in bridges:
            b.stop()
    seqs = by_device(read_topic(broker.bootstrap, "telemetry", min_count=800))
    assert {k: sorted(set(v)) for k, v in seqs.items()} == {f"truck-{i}": list(range(1, 201)) for i in range(1, 5)}
    assert sum(len(v) for v in seqs.values()) == 800, "each message went to one bridge only"
    assert all("$share/vigil-bridge/" in b.log() for b in bridges)
