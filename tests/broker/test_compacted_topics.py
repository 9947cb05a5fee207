"""Compaction through the broker: what a consumer of a compacted topic sees."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import BrokerProcess


@pytest.fixture
def fast_cleaner_broker(tmp_path) -> BrokerProcess:  # type: ignore[no-untyped-def]
    b = BrokerProcess(tmp_path / "data", extra_args=(
        "--config", "log.cleaner.backoff.ms=200", "--config", "log.retention.check.interval.ms=200"))
    b.start()
    yield b
    b.stop()


def read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """Everything from the start of partition 0 up to the end (the partition-EOF event)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, low)])
    out = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    out.append((m.offset(), m.key(), m.value()))
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    return out
        raise AssertionError(f"did not reach the end of {topic} in 30 s")
    finally:
        consumer.close()


def test_a_reader_from_the_beginning_sees_the_latest_value_of_every_key(fast_cleaner_broker: BrokerProcess) -> None:
    b = fast_cleaner_broker
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("device-state", 1, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "65536", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "0",
        # roll the active segment after half a second, so the newest versions get cleaned too
        "segment.ms": "500"})])["device-state"].result(10)
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4"})
    latest: dict[bytes, bytes | None] = {}
    for version in range(10):
        for k in range(1000):
            key = f"device-{k:04d}".encode()
            value = f"v{version} of {k}".encode()
            producer.produce("device-state", key=key, value=value)
            latest[key] = value
        producer.poll(0)
    for k in range(0, 1000, 10):  # every tenth device is deleted
        key = f"device-{k:04d}".encode()
        producer.produce("device-state", key=key, value=None)
        latest[key] = None
    assert producer.flush(30) == 0

    deadline = time.monotonic() + 60
    records = read_all(b.bootstrap, "device-state")
    while len(records) > 900 and time.monotonic() < deadline:
        time.sleep(0.5)
        records = read_all(b.bootstrap, "device-state")
    assert len(records) == 900, (
        f"{len(records)} records left of 10,100 written; offsets read "
        f"{[o for o, _, _ in records[:3]]}...{[o for o, _, _ in records[-3:]]}; broker log tail:\n"
        + "\n".join(b.log().splitlines()[-20:]))

    seen: dict[bytes, bytes | None] = {}
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for _, key, value in records:
        seen[key] = value
    for key, value in latest.items():
        if value is None:
            assert seen.get(key) is None, "a deleted key came back"
        else:
            assert seen.get(key) == value, f"{key!r} lost its latest value"
    assert all(value is not None for value in seen.values()), "tombstones outlived delete.retention.ms"


def test_a_record_without_a_key_is_refused_by_a_compacted_topic(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("keyed", 1, 1, config={"cleanup.policy": "compact"})])["keyed"].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0})
    errors: list[KafkaError] = []
    producer.produce("keyed", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD
