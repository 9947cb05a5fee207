"""The agent against a real Mosquitto and a fake gateway: outages, a full outbox, bad acks,
remote config and the retained status."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge import wire
from edge.agent import Agent, build_sensors
from edge.agent_cli import load_device_config
from edge.config import Config
from edge.outbox import Outbox
from edge.sensors.base import Reading
from tests.edge.conftest import FakeGateway, Mosquitto, device_toml, wait_until


class WatchedOutbox(Outbox):
    """A real outbox that also records, for each batch the publisher takes, the highest seq
    the agent had been acked at that moment (acks and sends share the publisher's thread)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sent_below_ack: list[tuple[int, int]] = []

    def next_batch(self, max_events: int, max_bytes: int = wire.MAX_EVENTS_PAYLOAD,
                   after_seq: int = 0) -> list[wire.Event]:
        acked = self.acked
        batch = super().next_batch(max_events, max_bytes, after_seq)
        self.sent_below_ack += [(e.seq, acked) for e in batch if e.seq <= acked]
        return batch


@contextmanager
def running(config: Config) -> Iterator[Agent]:
    outbox = WatchedOutbox(config.outbox.path, config.device.id, max_bytes=config.outbox.max_bytes,
                           max_age_s=config.outbox.max_age_s)
    agent = Agent(config, build_sensors(config), outbox=outbox)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_broker_outage_under_load_loses_nothing_keeps_order_and_never_resends_acked(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    total = 2500  # 500/s: ~1 s before the outage, 3 s during it, the rest after
    gateway.ack_delay = 0.2  # so that batches are in flight, unacked, when the broker goes
    cfg = load_device_config(device_toml(tmp_path, "truck-1", mosquitto.port, rate=500, limit=total,
                                         ack_timeout_s=1.0))
    with running(cfg) as agent:
        wait_until(lambda: len(gateway.seqs("truck-1")) >= 300, what="events before the outage")
        mosquitto.stop()
        time.sleep(3)
        assert agent.outbox.stats().depth > 0  # readings kept coming and were kept
        mosquitto.start()
        wait_until(lambda: agent.outbox.stats().acked == total, timeout=30, what="the backlog drained")
        assert agent.publisher.connects >= 2
        sent_below_ack = list(agent.outbox.sent_below_ack)  # type: ignore[attr-defined]

    copies = gateway.copies("truck-1")
    seqs = [c.seq for c in copies]
    assert set(seqs) == set(range(1, total + 1)), "every event arrived"
    first_seen: list[int] = []
    seen: set[int] = set()
    for c in copies:
        if c.seq not in seen:
            seen.add(c.seq)
            first_seen.append(c.seq)
        assert c.data["n"] == c.seq - 1  # the reading behind each seq, none lost before the outbox
    assert first_seen == list(range(1, total + 1)), "new events arrive in seq order, no gaps"
    # At-least-once allows duplicates of events the agent had no ack for (in flight when the
    # broker went down, or sent before their ack reached the agent). It never sends an event
    # again once an ack covering it has arrived:
    assert sent_below_ack == []
    duplicates = sum(n - 1 for n in Counter(seqs).values())
    in_flight = cfg.mqtt.inflight_batches * cfg.outbox.batch_max_events
    restarts = agent.publisher.connects + agent.publisher.resends  # each re-sends at most a window
    assert duplicates <= in_flight * restarts, (duplicates, restarts)


def test_full_outbox_drops_oldest_counts_it_in_the_retained_status_and_keeps_running(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    gateway.acking = False  # the gateway is up but the log is not committing
    cfg = load_device_config(device_toml(tmp_path, "truck-2", mosquitto.port, rate=1000, max_bytes=16_384,
                                         status_interval_s=0.2, ack_timeout_s=0.5))
    with running(cfg) as agent:
        wait_until(lambda: (s := gateway.statuses.get("truck-2")) is not None and s.dropped > 500,
                   what="the status to report drops")
        status = gateway.statuses["truck-2"]
        assert status.state == "online" and status.outbox_bytes <= 16_384
        assert status.extra["dropped_full"] == status.dropped
        gateway.acking = True
        wait_until(lambda: agent.outbox.stats().depth < 50 and gateway.seqs("truck-2")[-1]
                   > agent.outbox.stats().next_seq - 50, what="the gateway catching up")
        stats = agent.outbox.stats()
    top = stats.next_seq - 1
    missing = set(range(1, top - stats.depth + 1)) - set(gateway.seqs("truck-2"))
    assert missing and len(missing) <= stats.dropped  # what never arrived is what was counted
    assert min(missing) < max(missing) < top - 100  # the oldest went, the newest came through
    final = gateway.statuses["truck-2"]
    assert final.state == "offline" and final.dropped == stats.dropped  # the clean shutdown says so


def test_bad_duplicate_and_unknown_acks_change_nothing(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    gateway.acking = False
    cfg = load_device_config(device_toml(tmp_path, "bed-1", mosquitto.port, rate=200, limit=40,
                                         ack_timeout_s=0.5))
    with running(cfg) as agent:
        wait_until(lambda: len(set(gateway.seqs("bed-1"))) == 40, what="all 40 events sent")
        for payload in (b"nonsense", b'{"seq": "7"}', wire.encode_ack(10**9), wire.encode_ack(5),
                        wire.encode_ack(3), wire.encode_ack(5), wire.encode_ack(-1)):
            publish(mosquitto.port, wire.ack_topic("bed-1"), payload)
        wait_until(lambda: agent.outbox.acked == 5, what="the ack for 5")
        time.sleep(0.3)
        assert agent.outbox.seqs() == list(range(6, 41))  # exactly seq <= 5 left the outbox
        publish(mosquitto.port, wire.ack_topic("bed-1"), wire.encode_ack(40))
        wait_until(lambda: agent.outbox.stats().depth == 0, what="the ack for 40")


def test_retained_remote_config_is_applied_and_a_bad_one_is_reported_and_ignored(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    cfg = load_device_config(device_toml(tmp_path, "bed-2", mosquitto.port, rate=100, status_interval_s=0.2))
    publish(mosquitto.port, wire.config_topic("bed-2"),
            wire.encode_config({"sensors": {"counter": {"period_s": 0.5}}}), retain=True)
    with running(cfg) as agent:
        wait_until(lambda: (s := gateway.statuses.get("bed-2")) is not None
                   and s.extra["remote_config"]["state"] == "applied", what="the remote config")
        start = agent.outbox.stats().next_seq
        time.sleep(1.5)
        assert agent.outbox.stats().next_seq - start <= 4  # 100 readings/s reported every 0.5 s
        online = gateway.statuses["bed-2"]
        assert online.state == "online" and online.version and online.extra["sensors"]["counter"]["open"]

        publish(mosquitto.port, wire.config_topic("bed-2"),
                wire.encode_config({"sensors": {"counter": {"period_s": -1}}}), retain=True)
        wait_until(lambda: gateway.statuses["bed-2"].extra["remote_config"]["state"] == "rejected",
                   what="the rejection in the status")
        assert "sensors.counter.period_s" in gateway.statuses["bed-2"].extra["remote_config"]["error"]
        start = agent.outbox.stats().next_seq
        time.sleep(1.0)
        assert agent.outbox.stats().next_seq - start <= 3  # still the last good config


def test_fresh_readings_queue_behind_a_backlog_but_latency_recovers_within_seconds(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    cfg = load_device_config(device_toml(tmp_path, "truck-6", mosquitto.port, rate=20, batch_max_events=500))
    backlog = 20_000
    with Outbox(cfg.outbox.path, "truck-6") as box:  # what an outage left behind
        for i in range(0, backlog, 1000):
            box.append([Reading("gps", {"lat": 52.0, "lon": 4.0 + j * 1e-6}, 1_764_072_000_000 + j)
                        for j in range(i, i + 1000)])
    started = time.time()
    with running(cfg) as agent:
        wait_until(lambda: agent.outbox.acked > backlog + 20, what="the backlog drained and fresh events acked")
        drained_at = time.time()
        time.sleep(1.0)
    fresh = [c for c in gateway.copies("truck-6") if c.seq > backlog]
    assert [c.seq for c in fresh][:20] == list(range(backlog + 1, backlog + 21))  # in order, none lost
    assert [c.data["n"] for c in fresh][:20] == list(range(20))
    assert drained_at - started < 10
    # once the backlog is gone, a reading reaches the gateway within a poll tick or two
    after = [c.wall - c.ts / 1000 for c in fresh if c.ts / 1000 > drained_at]
    assert len(after) >= 10 and max(after) < 0.5, after


def test_after_connecting_one_batch_probes_the_gateway_before_the_window_opens(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    """Acks are cumulative: were several batches sent before the gateway listens, a later one
    could be acked past an earlier one the broker dropped. So: one batch, an ack, then more."""
    gateway.acking = False
    backlog = 1000
    cfg = load_device_config(device_toml(tmp_path, "truck-7", mosquitto.port, rate=10, batch_max_events=100))
    with Outbox(cfg.outbox.path, "truck-7") as box:
        box.append([Reading("gps", {"i": i}, 1_764_072_000_000 + i) for i in range(backlog)])
    with running(cfg) as agent:
        wait_until(lambda: gateway.batches.get("truck-7", 0) >= 1, what="the probe batch")
        time.sleep(0.5)
        assert gateway.batches["truck-7"] == 1 and gateway.seqs("truck-7") == list(range(1, 101))
        publish(mosquitto.port, wire.ack_topic("truck-7"), wire.encode_ack(100))
        wait_until(lambda: gateway.batches["truck-7"] >= 1 + cfg.mqtt.inflight_batches, what="the window")
        time.sleep(0.3)
        assert gateway.batches["truck-7"] == 1 + cfg.mqtt.inflight_batches  # now a full window
        gateway.acking = True
        publish(mosquitto.port, wire.ack_topic("truck-7"), wire.encode_ack(100 * (1 + cfg.mqtt.inflight_batches)))
        wait_until(lambda: agent.outbox.acked >= backlog, what="the rest")
