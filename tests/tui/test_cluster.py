"""The whole path with a real log: records produced to the ``telemetry``, ``alerts``,
``device-state`` and ``device-status`` topics of a real broker, the API's store consuming
them, and the dashboard showing devices, the alert, events/s and the Cluster screen in
kafka-topics' describe layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from textual.widgets import Static

from gateway.store import alert_id_for
from tests.api.conftest import make_api, wait_until
from tests.conftest import BrokerProcess
from tests.tui.conftest import (
    T0,
    Api,
    Served,
    dash,
    manual,
    patient,
    status,
    transition,
    until,
    vehicle,
)
from tui.table import KeyedTable

pytestmark = pytest.mark.anyio


def produce(producer: Producer, topic: str, key: str, value: dict[str, object], partition: int = 0) -> None:
    producer.produce(topic, key=key.encode(), value=orjson.dumps(value), partition=partition)


@pytest.fixture
def logged(tmp_path: Path, broker: BrokerProcess) -> Iterator[tuple[Api, Served, Producer]]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = [NewTopic("telemetry", 2, 1), NewTopic("alerts", 1, 1),
              NewTopic("device-state", 1, 1, config={"cleanup.policy": "compact"}),
              NewTopic("device-status", 1, 1, config={"cleanup.policy": "compact"})]
    for fut in admin.create_topics(topics).values():
        fut.result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    api = make_api(tmp_path, bootstrap=broker.bootstrap, keepalive_s=0.5)
    served = Served(api.app).start()
    try:
        yield api, served, producer
    finally:
        producer.flush(5)
        served.stop()
        api.db.close()


async def test_devices_alerts_and_the_cluster_from_real_topics(
        logged: tuple[Api, Served, Producer]) -> None:
    api, served, producer = logged
    produce(producer, "device-state", "truck-1", vehicle("truck-1", 12.5))
    produce(producer, "device-state", "bed-1", patient("bed-1", 8, "high", spo2=90))
    produce(producer, "device-status", "truck-1", status("truck-1"))
    produce(producer, "device-status", "bed-1", status("bed-1", "offline"))
    produce(producer, "alerts", "news2|bed-1",
            transition("news2", "bed-1", kind="patient", severity="critical"))
    for seq in range(10):
        produce(producer, "telemetry", "truck-1",
                {"device": "truck-1", "seq": seq, "ts": T0 + seq, "kind": "gps", "data": {}},
                partition=seq % 2)
    assert producer.flush(15) == 0
    wait_until(lambda: len(api.db.devices()) == 2 and api.db.last_change_id() >= 1,
               what="the store to consume the topics")

    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(150, 45)) as pilot:
        await until(pilot, lambda: len(app.state.devices) == 2, "both devices")
        await pilot.press("5")
        parts = app.query_one("#partitions-table", KeyedTable)
        await until(pilot, lambda: "telemetry/1" in parts.shown_keys, "the partitions")
        row = [str(parts.get_cell("telemetry/1", c)) for c, _ in parts.column_spec]
        assert row[:5] == ["telemetry", "1", "0", "0", "0"]  # Topic Partition Leader Replicas Isr
        assert [str(parts.get_cell(f"telemetry/{p}", "log_end")) for p in (0, 1)] == ["5", "5"]
        assert {k.split("/")[0] for k in parts.shown_keys} >= {"alerts", "device-state",
                                                                "device-status", "telemetry"}
        assert "brokers: 0@127.0.0.1" in str(app.query_one("#cluster-info", Static).render())

        # 20 more events in 4 s of the dashboard's clock: 5 events/s on the Overview
        for seq in range(10, 30):
            produce(producer, "telemetry", "truck-1",
                    {"device": "truck-1", "seq": seq, "ts": T0 + seq, "kind": "gps", "data": {}},
                    partition=seq % 2)
        assert producer.flush(15) == 0
        polls = app.cluster_polls
        manual(app).advance(4)
        await until(pilot, lambda: app.cluster_polls > polls, "the next poll of /cluster")
        assert app.state.events_per_s() == 5.0
        await pilot.press("1")
        assert str(app.query_one("#events-value", Static).render()) == "5.0"
        assert parts.get_cell("telemetry/0", "log_end") == "15"

        await pilot.press("3")
        patients = app.query_one("#patient-table", KeyedTable)
        await until(pilot, lambda: patients.shown_keys == ["bed-1"], "the patient row")
        assert str(patients.get_cell("bed-1", "status")) == "offline"
        await pilot.press("4")
        alerts = app.query_one("#alerts-table", KeyedTable)
        await until(pilot, lambda: alerts.shown_keys == [alert_id_for("news2|bed-1")], "the alert")
