"""One consumer-group member in its own process, for tests and the benchmark.

    python -m tests.broker.group_member CLIENT --bootstrap HOST:PORT --group G --topic T
        [--session-timeout-ms MS] [--instance-id ID] [--client-id ID]

CLIENT is `confluent` (confluent-kafka, subscribe()), `kafka-python` (KafkaConsumer) or
`aiokafka` (AIOKafkaConsumer). The member reads from the earliest offset when the group has
no commit, and after processing each poll batch commits the batch synchronously. It reports
what happens as JSON lines on stdout, flushed at once so a SIGKILL loses nothing already
done; `t` is time.monotonic(), comparable between processes on one machine:

    {"event": "subscribed", "t": ...}
    {"event": "assigned", "partitions": [0, 3], "t": ...}      the whole assignment, when it changes
    {"event": "records", "records": [[partition, offset], ...], "t": ...}
    {"event": "committed", "offsets": {"0": 17}, "t": ...}     next offset to read, per partition
    {"event": "commit_failed", "error": "...", "offsets": {...}, "t": ...}
    {"event": "closed", "t": ...}                              after SIGTERM: left the group

SIGTERM closes the consumer cleanly (a member leaving); SIGKILL is the crash case.
SIGUSR1 makes it stop committing (it keeps reading), so that a SIGKILL after it leaves
records read but not committed: those a new owner of the partitions must read again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

BATCH = 100
POLL_SECONDS = 0.2


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


class Assignment:
    """The member's current partitions; reports every change."""

    def __init__(self) -> None:
        self.partitions: set[int] = set()

    def add(self, partitions: Iterable[int]) -> None:
        self._change(self.partitions | set(partitions))

    def remove(self, partitions: Iterable[int]) -> None:
        self._change(self.partitions - set(partitions))

    def _change(self, partitions: set[int]) -> None:
        if partitions != self.partitions:
            self.partitions = partitions
            emit("assigned", partitions=sorted(partitions))


def next_offsets(records: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the last record of the batch: what to commit."""
    out: dict[int, int] = {}
    for partition, offset in records:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


def report_commit(offsets: dict[int, int], error: BaseException | None) -> None:
    shown = {str(p): o for p, o in sorted(offsets.items())}
    if error is None:
        emit("committed", offsets=shown)
    else:
        emit("commit_failed", offsets=shown, error=f"{type(error).__name__}: {error}")


# ------------------------------------------------------------------------- the clients


def run_confluent(args: argparse.Namespace, stopping: list[bool], paused: list[bool]) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.client_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if args.session_timeout_ms:
        config["session.timeout.ms"] = args.session_timeout_ms
        config["heartbeat.interval.ms"] = max(100, args.session_timeout_ms // 6)
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)
    assignment = Assignment()
    consumer.subscribe(
        [args.topic],
        on_assign=lambda c, ps: assignment.add(p.partition for p in ps),
        on_revoke=lambda c, ps: assignment.remove(p.partition for p in ps),
        on_lost=lambda c, ps: assignment.remove(p.partition for p in ps),
    )
    emit("subscribed")
    try:
        while not stopping:
            batch = consumer.consume(num_messages=BATCH, timeout=POLL_SECONDS)
            records = [(m.partition(), m.offset()) for m in batch if m.error() is None]
            for m in batch:
                if m.error() is not None:
                    emit("error", error=m.error().str())
            if not records:
                continue
            emit("records", records=records)
            if paused:
                continue
            offsets = next_offsets(records)
            try:
                consumer.commit(offsets=[TopicPartition(args.topic, p, o)
                                         for p, o in offsets.items()], asynchronous=False)
                report_commit(offsets, None)
            except KafkaException as exc:
                report_commit(offsets, exc)
    finally:
        consumer.close()


def run_kafka_python(args: argparse.Namespace, stopping: list[bool],
                     paused: list[bool]) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    assignment = Assignment()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            assignment.remove(tp.partition for tp in revoked)

        def on_partitions_assigned(self, assigned: Any) -> None:
            assignment.add(tp.partition for tp in assigned)

    extra: dict[str, Any] = {}
    if args.session_timeout_ms:
        extra["session_timeout_ms"] = args.session_timeout_ms
        extra["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 6)
    if args.instance_id:
        extra["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                             client_id=args.client_id, auto_offset_reset="earliest",
                             enable_auto_commit=False, **extra)
    consumer.subscribe([args.topic], listener=Listener())
    emit("subscribed")
    try:
        while not stopping:
            polled = consumer.poll(timeout_ms=int(POLL_SECONDS * 1000), max_records=BATCH)
            records = [(m.partition, m.offset) for msgs in polled.values() for m in msgs]
            if not records:
                continue
            emit("records", records=records)
            if paused:
                continue
            offsets = next_offsets(records)
            try:
                consumer.commit({TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                                 for p, o in offsets.items()})
                report_commit(offsets, None)
            except KafkaError as exc:
                report_commit(offsets, exc)
    finally:
        consumer.close()


async def run_aiokafka(args: argparse.Namespace, stopping: list[bool],
                       paused: list[bool]) -> None:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import KafkaError

    assignment = Assignment()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            assignment.remove(tp.partition for tp in revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            assignment.add(tp.partition for tp in assigned)

    extra: dict[str, Any] = {}
    if args.session_timeout_ms:
        extra["session_timeout_ms"] = args.session_timeout_ms
        extra["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 6)
    if args.instance_id:
        extra["group_instance_id"] = args.instance_id
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                                client_id=args.client_id, auto_offset_reset="earliest",
                                enable_auto_commit=False, **extra)
    await consumer.start()
    consumer.subscribe([args.topic], listener=Listener())
    emit("subscribed")
    try:
        while not stopping:
            polled = await consumer.getmany(timeout_ms=int(POLL_SECONDS * 1000),
                                            max_records=BATCH)
            records = [(m.partition, m.offset) for msgs in polled.values() for m in msgs]
            if not records:
                continue
            emit("records", records=records)
            if paused:
                continue
            offsets = next_offsets(records)
            try:
                await consumer.commit({TopicPartition(args.topic, p): o
                                       for p, o in offsets.items()})
                report_commit(offsets, None)
            except KafkaError as exc:
                report_commit(offsets, exc)
    finally:
        await consumer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one consumer-group member")
    parser.add_argument("client", choices=["confluent", "kafka-python", "aiokafka"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=0,
                        help="also sets the heartbeat interval to a sixth of it "
                             "(default: the client's own defaults)")
    parser.add_argument("--instance-id", help="group.instance.id: a static member")
    parser.add_argument("--client-id", default="vigil-test-member")
    args = parser.parse_args(argv)

    stopping: list[bool] = []  # non-empty once SIGTERM arrived
    paused: list[bool] = []  # non-empty once SIGUSR1 arrived: commit no more
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: paused.append(True))
    if args.client == "confluent":
        run_confluent(args, stopping, paused)
    elif args.client == "kafka-python":
        run_kafka_python(args, stopping, paused)
    else:
        asyncio.run(run_aiokafka(args, stopping, paused))
    emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
