"""Real Kafka clients against a real broker process: librdkafka, kafka-python, kcat."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from tests.conftest import BrokerProcess


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(10)


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], **conf: object) -> list[tuple[int, int]]:
    """Produce and return the (partition, offset) of each record, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, **conf})
    placed: dict[int, tuple[int, int]] = {}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: object, i: int) -> None:
        if err is not None:
            errors.append(err)
        else:
            placed[i] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    for i, (key, value) in enumerate(records):
        producer.produce(topic, value=value, key=key, on_delivery=lambda e, m, i=i: on_delivery(e, m, i))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return [placed[i] for i in range(len(records))]


def consume_assigned(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_confluent_idempotent_produce_and_assign_consume_in_order(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "readings", partitions=3)
    records = [(f"device-{i % 7}".encode(), f"reading {i}".encode()) for i in range(3000)]
    placed = produce_all(broker.bootstrap, "readings", records)

    partition_of_key: dict[bytes, set[int]] = defaultdict(set)
    for (key, _), (partition, _) in zip(records, placed, strict=True):
        partition_of_key[key].add(partition)
    assert all(len(p) == 1 for p in partition_of_key.values()), "a key landed on two partitions"

    msgs = consume_assigned(broker.bootstrap, "readings", 3, len(records))
    assert len(msgs) == len(records)
    by_partition: dict[int, list] = defaultdict(list)
    for m in msgs:
        by_partition[m.partition()].append(m)
    for partition, ms in by_partition.items():
        offsets = [m.offset() for m in ms]
        assert offsets == list(range(len(ms))), f"partition {partition} has gaps or reorders"
    # Per key, values arrive in the order they were produced.
    seen: dict[bytes, list[int]] = defaultdict(list)
    for m in msgs:
        seen[m.key()].append(int(m.value().split()[1]))
    for key, values in seen.items():
        assert values == sorted(values), key
    assert sorted(v for vs in seen.values() for v in vs) == list(range(3000))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip_through_both_clients(broker: BrokerProcess, codec: str) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic = f"compressed-{codec}"
    create_topic(broker.bootstrap, topic)
    records = [(None, (f"{codec} value {i} " * 20).encode()) for i in range(500)]
    produce_all(broker.bootstrap, topic, records, **{"compression.type": codec})

    msgs = consume_assigned(broker.bootstrap, topic, 1, len(records))
    assert [m.value() for m in msgs] == [v for _, v in records]

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=10000)
    consumer.assign([KTP(topic, 0)])
    consumer.seek_to_beginning()
    values = []
    for m in consumer:
        values.append(m.value)
        if len(values) == len(records):
            break
    consumer.close()
    assert values == [v for _, v in records]


def test_kafka_python_idempotent_producer_and_offsets(broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True,
                             compression_type="zstd")
    create_topic(broker.bootstrap, "kp")
    base = int(time.time() * 1000) - 100_000
    futures = [producer.send("kp", key=b"k", value=f"v{i}".encode(), timestamp_ms=base + i * 1000)
               for i in range(50)]
    producer.flush(30)
    offsets = [f.get(10).offset for f in futures]
    assert offsets == list(range(50))
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    tp = KTP("kp", 0)
    assert consumer.beginning_offsets([tp])[tp] == 0
    assert consumer.end_offsets([tp])[tp] == 50
    found = consumer.offsets_for_times({tp: base + 20 * 1000})[tp]
    # kafka-python batches records; the answer is the first offset whose batch may hold it.
    assert found is not None and found.offset <= 20
    consumer.assign([tp])
    consumer.seek(tp, 10)
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == 40:
            break
    consumer.close()
    assert got == [f"v{i}".encode() for i in range(10, 50)]


def test_list_offsets_by_timestamp_with_librdkafka(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "timed")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": "all"})
    base = 1_700_000_000_000
    for i in range(10):
        producer.produce("timed", value=f"t{i}".encode(), timestamp=base + i * 60_000)
        producer.flush(10)  # one batch per record, so lookups are exact
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    def lookup(ts: int) -> int:
        return consumer.offsets_for_times([TopicPartition("timed", 0, ts)], timeout=10)[0].offset

    assert lookup(base + 5 * 60_000) == 5  # exact
    assert lookup(base + 5 * 60_000 - 1) == 5  # the first record at or after
    assert lookup(base) == 0
    assert lookup(base + 100 * 60_000) == -1  # nothing that recent
    low, high = consumer.get_watermark_offsets(TopicPartition("timed", 0), timeout=10)
    assert (low, high) == (0, 10)
    consumer.close()


def test_admin_describe_configs_create_partitions_and_delete(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("device-state", 2, 1, config={"cleanup.policy": "compact",
                                                                "retention.ms": "3600000"})])["device-state"].result(10)
    configs = admin.describe_configs([ConfigResource("TOPIC", "device-state")])
    entries = next(iter(configs.values())).result(10)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["retention.ms"].value == "3600000"
    assert entries["segment.bytes"].is_default  # defaults are reported too

    bad = admin.create_topics([NewTopic("bad-config", 1, 1, config={"retention.mss": "1"})])
    with pytest.raises(Exception, match=r"retention\.mss"):
        bad["bad-config"].result(10)
    exists = admin.create_topics([NewTopic("device-state", 1, 1)])
    with pytest.raises(Exception, match="already exists"):
        exists["device-state"].result(10)
    too_many = admin.create_topics([NewTopic("replicated", 1, 3)])
    with pytest.raises(Exception, match="replication factor"):
        too_many["replicated"].result(10)

    admin.create_partitions([NewPartitions("device-state", 5)])["device-state"].result(10)
    md = admin.list_topics(timeout=10)
    assert len(md.topics["device-state"].partitions) == 5

    admin.delete_topics(["device-state"])["device-state"].result(10)
    assert "device-state" not in admin.list_topics(timeout=10).topics


def test_topics_survive_restart_with_their_data(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "durable", partitions=2)
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    produce_all(broker.bootstrap, "durable", records)
    broker.restart()
    msgs = consume_assigned(broker.bootstrap, "durable", 2, len(records))
    assert sorted(m.value() for m in msgs) == sorted(v for _, v in records)
    # and the log keeps growing from where it was
    produce_all(broker.bootstrap, "durable", [(b"k0", b"after restart")])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    total = sum(consumer.get_watermark_offsets(TopicPartition("durable", p), timeout=10)[1] for p in range(2))
    consumer.close()
    assert total == 201


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (.ci/run installs it)")
def test_kcat_produces_lists_and_consumes(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "kcat-topic", partitions=2)
    lines = "".join(f"key{i % 3}:value {i}\n" for i in range(100))
    subprocess.run(["kcat", "-b", broker.bootstrap, "-P", "-t", "kcat-topic", "-K:", "-z", "lz4"],
                   input=lines.encode(), check=True, timeout=30)
    listing = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-t", "kcat-topic"],
                             capture_output=True, check=True, timeout=30).stdout.decode()
    assert 'topic "kcat-topic" with 2 partitions' in listing
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "kcat-topic", "-e", "-f", "%k=%s\n"],
                         capture_output=True, check=True, timeout=30).stdout.decode()
    got = out.splitlines()
    assert sorted(got) == sorted(f"key{i % 3}=value {i}" for i in range(100))
    for key in ("key0", "key1", "key2"):  # per key, in produce order
        values = [int(line.split()[-1]) for line in got if line.startswith(key + "=")]
        assert values == sorted(values)


def test_topic_configs_can_be_changed_and_are_reported(broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("tuned", 1, 1, config={"retention.ms": "1000"})])["tuned"].result(10)
    resource = ConfigResource("TOPIC", "tuned", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    next(iter(admin.incremental_alter_configs([resource]).values())).result(10)
    entries = next(iter(admin.describe_configs([ConfigResource("TOPIC", "tuned")]).values())).result(10)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["retention.ms"].is_default  # the override was deleted

    bad = ConfigResource("TOPIC", "tuned", incremental_configs=[
        ConfigEntry("no.such.setting", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception, match=r"no\.such\.setting"):
        next(iter(admin.incremental_alter_configs([bad]).values())).result(10)
    # survives a restart
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    entries = next(iter(admin.describe_configs([ConfigResource("TOPIC", "tuned")]).values())).result(10)
    assert entries["cleanup.policy"].value == "compact"


def test_log_append_time_topics_stamp_the_broker_clock(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "stamped", config={"message.timestamp.type": "LogAppendTime"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    producer.produce("stamped", value=b"old", timestamp=1_000_000_000_000)  # 2001
    assert producer.flush(10) == 0
    before = int(time.time() * 1000) - 60_000
    msgs = consume_assigned(broker.bootstrap, "stamped", 1, 1)
    kind, ts = msgs[0].timestamp()
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert ts > before  # the broker's clock, not the producer's
