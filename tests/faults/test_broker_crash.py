"""SIGKILL the broker while an idempotent acks=all producer runs: nothing acknowledged is lost."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import BrokerProcess


def test_sigkill_mid_produce_loses_no_acknowledged_record(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("crash", 1, 1, config={"flush.messages": "1"})])["crash"].result(10)
    acked: dict[int, int] = {}  # value -> offset
    failed: list[tuple[int, KafkaError]] = []
    lock = threading.Lock()

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        value = int(msg.value())  # type: ignore[attr-defined]
        with lock:
            if err is None:
                acked[value] = msg.offset()  # type: ignore[attr-defined]
            else:
                failed.append((value, err))

    producer = Producer({
        "bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 2, "message.timeout.ms": 60000, "reconnect.backoff.max.ms": 200,
        "batch.num.messages": 200,
    })
    stop = threading.Event()
    sent = {"n": 0}

    def run() -> None:
        i = 0
        while not stop.is_set():
            try:
                producer.produce("crash", value=str(i).encode(), on_delivery=on_delivery)
                i += 1
            except BufferError:
                producer.poll(0.05)
                continue
            if i % 100 == 0:
                producer.poll(0)
                time.sleep(0.002)
        sent["n"] = i

    thread = threading.Thread(target=run)
    thread.start()
    crashes = 3
    try:
        for cycle in range(1, crashes + 1):
            target = cycle * 4000
            deadline = time.monotonic() + 30
            while len(acked) < target and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(acked) >= target, f"producer made no progress before crash {cycle}"
            broker.kill()  # mid-stream: requests in flight, batches half written
            time.sleep(0.3)
            broker.start()
        acked_before_last_crash = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < acked_before_last_crash + 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert producer.flush(60) == 0
    fatal = [e for _, e in failed if e.fatal()]
    assert not fatal, fatal
    assert len(acked) > acked_before_last_crash, "producer did not resume after the restart"

    high = max(acked.values()) + 1
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    consumer.assign([TopicPartition("crash", 0, 0)])
    log_values: list[int] = []
    deadline = time.monotonic() + 60
    low_high = consumer.get_watermark_offsets(TopicPartition("crash", 0), timeout=10)
    while len(log_values) < low_high[1] and time.monotonic() < deadline:
        msgs = consumer.consume(1000, 0.5)
        log_values.extend(int(m.value()) for m in msgs if m.error() is None)
    consumer.close()

    assert low_high[1] >= high
    assert len(log_values) == len(set(log_values)), "a record was written twice"
    assert log_values == sorted(log_values), "records are out of order"
    missing = set(acked) - set(log_values)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    for value, offset in acked.items():
        assert log_values[offset] == value, "a record moved from the offset it was acknowledged at"
