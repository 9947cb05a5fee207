"""``gateway.cluster.describe_cluster`` against Vigil's own broker, through the Kafka admin
API only: topics, partitions, offsets, consumer groups and their lag."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from gateway.cluster import (
    ClusterUnavailable,
    PartitionInfo,
    RawCluster,
    build_view,
    describe_cluster,
    lag,
)
from tests.conftest import BrokerProcess, free_port

# --- the pure core -----------------------------------------------------------------------


def test_lag_is_what_is_left_to_read() -> None:
    assert lag(7, 10) == 3
    assert lag(10, 10) == 0
    assert lag(12, 10) == 0  # a commit ahead of a truncated log is not negative lag
    assert lag(None, 10) is None and lag(-1001, 10) is None and lag(3, None) is None


def test_build_view_hides_internal_topics_unless_asked() -> None:
    raw = RawCluster(brokers=((1, "b1", 9093), (0, "b0", 9092)),
                     partitions=(PartitionInfo("__consumer_offsets", 0, 0, (0,), (0,)),
                                 PartitionInfo("t", 1, 1, (1, 0), (1,)), PartitionInfo("t", 0, 0, (0, 1), (0, 1))),
                     offsets={("t", 0): (2, 10), ("t", 1): (0, 5), ("__consumer_offsets", 0): (0, 3)})
    view = build_view(raw)
    assert [b["id"] for b in view["brokers"]] == [0, 1]
    assert [t["name"] for t in view["topics"]] == ["t"]
    [t] = view["topics"]
    assert t["records"] == 13
    assert t["partitions"][1] == {"partition": 1, "leader": 1, "replicas": [1, 0], "isr": [1],
                                  "earliest": 0, "log_end": 5, "error": None}
    assert datetime.fromisoformat(view["as_of"]).utcoffset() is not None  # timezone-aware
    assert [t["name"] for t in build_view(raw, include_internal=True)["topics"]] == ["__consumer_offsets", "t"]


# --- against the broker ------------------------------------------------------------------

COUNTS = {0: 7, 1: 3, 2: 0}  # records produced to orders[partition]


@pytest.fixture
def orders(broker: BrokerProcess) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.create_topics([NewTopic("orders", 3, 1), NewTopic("audit", 1, 1)]).values():
        fut.result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for partition, n in COUNTS.items():
        for i in range(n):
            p.produce("orders", key=f"k{i}".encode(), value=b"v", partition=partition)
    p.produce("audit", value=b"a")
    assert p.flush(15) == 0
    yield broker.bootstrap


def _consume_all(c: Consumer, n: int) -> None:
    got = 0
    deadline = time.monotonic() + 30
    while got < n:
        assert time.monotonic() < deadline, f"consumed {got} of {n}"
        m = c.poll(0.2)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)


def test_topics_partitions_offsets_and_a_live_group_with_no_lag(orders: str) -> None:
    c = Consumer({"bootstrap.servers": orders, "group.id": "billing", "client.id": "billing-1",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["orders"])
    try:
        _consume_all(c, sum(COUNTS.values()))
        view = describe_cluster(orders)
        p = Producer({"bootstrap.servers": orders})  # 4 more arrive: the live group lags by 4
        for _ in range(4):
            p.produce("orders", value=b"late", partition=1)
        assert p.flush(10) == 0
        later = describe_cluster(orders, ["billing"])
    finally:
        c.close()
    [broker] = view["brokers"]
    assert broker["host"] == "127.0.0.1" and f"127.0.0.1:{broker['port']}" == orders
    assert view["cluster_id"] and view["controller"] == broker["id"]
    topics = {t["name"]: t for t in view["topics"]}
    assert set(topics) == {"orders", "audit"}  # no __consumer_offsets
    parts = topics["orders"]["partitions"]
    assert [(p["partition"], p["earliest"], p["log_end"]) for p in parts] == [(0, 0, 7), (1, 0, 3), (2, 0, 0)]
    assert all(p["leader"] == broker["id"] and p["replicas"] == [broker["id"]] and p["isr"] == [broker["id"]]
               for p in parts)
    assert topics["orders"]["records"] == 10 and topics["audit"]["records"] == 1
    [billing] = [g for g in view["groups"] if g["group"] == "billing"]
    assert billing["state"] == "stable"
    [member] = billing["members"]
    assert member["client_id"] == "billing-1"
    assert member["assignment"] == [{"topic": "orders", "partition": i} for i in range(3)]
    assert billing["lag"] == 0
    rows = {r["partition"]: r for r in billing["partitions"]}
    assert rows[0]["committed"] == 7 and rows[1]["committed"] == 3
    assert rows[2]["committed"] is None and rows[2]["lag"] is None  # nothing to commit there
    [billing] = later["groups"]
    assert billing["lag"] == 4
    assert [(r["partition"], r["log_end"], r["lag"]) for r in billing["partitions"]] == [
        (0, 7, 0), (1, 7, 4), (2, 0, None)]


def test_a_group_that_committed_part_way_shows_its_lag_per_partition(orders: str) -> None:
    group = f"reports-{uuid.uuid4().hex[:6]}"
    c = Consumer({"bootstrap.servers": orders, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("orders", 0, 5), TopicPartition("orders", 1, 1),
                          TopicPartition("audit", 0, 1)], asynchronous=False)
    finally:
        c.close()
    view = describe_cluster(orders, [group])
    [g] = view["groups"]
    assert g["group"] == group and g["state"] == "empty" and g["members"] == []
    assert [(r["topic"], r["partition"], r["committed"], r["log_end"], r["lag"]) for r in g["partitions"]] == [
        ("audit", 0, 1, 1, 0), ("orders", 0, 5, 7, 2), ("orders", 1, 1, 3, 2)]
    assert g["lag"] == 4
    assert {g["group"] for g in describe_cluster(orders)["groups"]} >= {group}


def test_internal_topics_on_request(orders: str) -> None:
    c = Consumer({"bootstrap.servers": orders, "group.id": "g", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("orders", 0, 1)], asynchronous=False)
    finally:
        c.close()
    names = {t["name"] for t in describe_cluster(orders, [], include_internal=True)["topics"]}
    assert "__consumer_offsets" in names and "orders" in names


def test_an_unreachable_cluster_says_so() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(ClusterUnavailable, match=bootstrap):
        describe_cluster(bootstrap, timeout=2)
