"""`vigil processors`: the consumer-group shell around `PartitionProcessor`.

One process joins the consumer group on ``telemetry``; running more processes with the
same group splits the partitions between them, and a partition's state moves with it.

State and offsets are checkpointed together
-------------------------------------------
Every ``checkpoint.interval_s`` (and when a partition is taken away in a rebalance, and
at a clean stop) the processor

1. waits until every output record written so far is acknowledged by the log
   (acks=all, idempotent producer);
2. writes one record per partition it owns to the compacted checkpoint topic: the
   partition's whole state and the offset of the next input record to read, in one
   value, so the two can never disagree. Partition *p* of ``telemetry`` checkpoints to
   partition *p* of the checkpoint topic, so the latest checkpoint is simply the last
   record there: restoring reads one record;
3. commits the same offsets to the consumer group (only for lag tools such as
   ``vigil groups describe``: the checkpoint is what counts).

On an assignment (a start, a rebalance, a restart after a crash) it restores each
partition from its last checkpoint and seeks to the checkpointed offset. Records read
after that checkpoint are read again and, the processing being deterministic (see
`processors.partition`), produce the same state and the same output records again:
every event affects state once, and an output record may be written twice with
identical content (consumers key alerts on (fingerprint, started, revision)). If an
output record cannot be written, the processor stops with an error rather than
checkpoint past it; its supervisor restarts it from the last checkpoint.

Why a compacted topic and not a local SQLite file: a partition's state must follow the
partition to whichever process (on whichever machine) gets it, and the topic is there
wherever the log is, including an Apache Kafka or Redpanda cluster; with one record per
partition in one value, state and offset are written atomically without transactions.
The cost is the whole partition state in each checkpoint (compressed, a few hundred
bytes per device), which bounds how often it is sensible to checkpoint.

A partition with no checkpoint starts at the group's committed offset if there is one
(with empty state: a warning says so), else at the beginning of the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from processors.config import ProcessorsConfig
from processors.partition import OutRecord, PartitionProcessor

__all__ = ["CHECKPOINT_MAX_BYTES", "ProcessorService", "ProcessorsFailed"]

log = logging.getLogger("vigil.processors")

CHECKPOINT_MAX_BYTES = 64 * 1024 * 1024


class ProcessorsFailed(RuntimeError):
    """The log refused an output or a checkpoint: stop and let the supervisor restart us."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class ProcessorService:
    def __init__(self, config: ProcessorsConfig, *, client_id: str = "vigil-processors",
                 wall_clock: Callable[[], int] = _now_ms) -> None:
        self.config = config
        self.client_id = client_id
        self._wall = wall_clock
        self._stop = threading.Event()
        self._owned: dict[int, PartitionProcessor] = {}
        self._failure: str | None = None
        self._outputs = {"alerts": config.topics.alerts, "device_state": config.topics.device_state,
                         "late": config.topics.late}
        base = {"bootstrap.servers": config.bootstrap, "client.id": client_id, **config.client}
        self._producer = Producer({
            **base,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "zstd",
            "message.max.bytes": CHECKPOINT_MAX_BYTES + 1024,
            "message.timeout.ms": 0,
            "error_cb": self._on_error,
        })
        self._consumer = Consumer({
            **base,
            "group.id": config.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "session.timeout.ms": 10_000,
            "partition.assignment.strategy": "range",
            **({"group.instance.id": config.instance_id} if config.instance_id else {}),
            "error_cb": self._on_error,
        })
        self._reader = Consumer({  # reads checkpoints; no group
            **base,
            "group.id": f"{config.group}.restore",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": CHECKPOINT_MAX_BYTES + 1024,
        })
        self._last_checkpoint = time.monotonic()
        self._last_report = time.monotonic()
        self._events_at_report = 0

    # -- running ------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Until `stop`: consume, process, write, checkpoint. Raises ProcessorsFailed."""
        self.ensure_topics()
        topics = self.config.topics
        self._consumer.subscribe([topics.telemetry], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("processors %s joined group=%s on topic=%s", self.client_id, self.config.group,
                 topics.telemetry)
        if ready is not None:
            ready()
        try:
            while not self._stop.is_set():
                self._poll_once()
                if self._failure is not None:
                    raise ProcessorsFailed(self._failure)
                if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval_s:
                    self.checkpoint()
                self._report()
            self.checkpoint()
        finally:
            self._close()

    def _poll_once(self) -> None:
        # Wait for one record (or a rebalance, or 0.2 s), then take whatever else is
        # already fetched: at a trickle each event is handled at once, under load in batches.
        first = self._consumer.poll(0.2)
        messages = [] if first is None else [first, *self._consumer.consume(num_messages=2000, timeout=0)]
        wall = self._wall()
        produce = self._produce
        owned = self._owned
        for msg in messages:
            err = msg.error()
            partition = msg.partition()
            proc = owned.get(partition) if partition is not None else None
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if proc is not None:
                        proc.caught_up(wall)
                else:
                    log.warning("consumer error: %s", err)
                continue
            if proc is None:  # a record of a partition just taken away
                continue
            offset = msg.offset()
            if proc.offset is not None and offset < proc.offset:
                continue  # already in the restored state
            for record in proc.process(offset, msg.value(), wall):
                produce(record)
        for proc in owned.values():
            for record in proc.tick(wall):
                produce(record)
        self._producer.poll(0)

    def _produce(self, record: OutRecord) -> None:
        while True:
            try:
                self._producer.produce(self._outputs[record.output], record.value, record.key,
                                       timestamp=record.ts, on_delivery=self._delivered)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self._producer.poll(0.05)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._failure is None:
            self._failure = f"writing to {msg.topic()} failed: {err.str()}"
            log.error("%s", self._failure)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._failure = f"fatal Kafka client error: {err.str()}"
        log.warning("kafka: %s", err.str())

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Write the state of ``partitions`` (default: all owned) with their offsets,
        after every output so far is acknowledged."""
        self._last_checkpoint = time.monotonic()
        chosen = [p for p in (self._owned if partitions is None else partitions)
                  if p in self._owned and self._owned[p].offset is not None]
        if not chosen:
            return
        self._flush("outputs")
        topics = self.config.topics
        for p in chosen:
            proc = self._owned[p]
            self._producer.produce(topics.checkpoints, proc.snapshot(), self._checkpoint_key(p),
                                   partition=p, on_delivery=self._delivered)
        self._flush("checkpoints")
        offsets = [TopicPartition(topics.telemetry, p, self._owned[p].offset) for p in chosen]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # informational only; the checkpoint is written
            log.warning("committing offsets to the group failed: %s", exc)
        log.debug("checkpointed partitions=%s", chosen)

    def _flush(self, what: str) -> None:
        while self._producer.flush(1.0) > 0:
            if self._failure is not None:
                break
            log.warning("waiting for the log to acknowledge %s", what)
        if self._failure is not None:
            raise ProcessorsFailed(self._failure)

    def _checkpoint_key(self, partition: int) -> bytes:
        return f"{self.config.topics.telemetry}:{partition}".encode()

    def _restore(self, partition: int) -> PartitionProcessor | None:
        tp = TopicPartition(self.config.topics.checkpoints, partition)
        low, high = self._reader.get_watermark_offsets(tp, timeout=10)
        if high <= low:
            return None
        self._reader.assign([TopicPartition(tp.topic, partition, high - 1)])
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = self._reader.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                if msg.key() != self._checkpoint_key(partition):
                    log.warning("checkpoint topic %s partition %d holds %r, not %r: starting fresh",
                                tp.topic, partition, msg.key(), self._checkpoint_key(partition))
                    return None
                return PartitionProcessor.restore(self.config, msg.value() or b"")
            raise ProcessorsFailed(f"could not read the checkpoint of partition {partition}")
        finally:
            self._reader.unassign()

    # -- rebalances (called from consume, in this thread) ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        for tp in partitions:
            proc = self._restore(tp.partition)
            if proc is not None and proc.offset is not None:
                tp.offset = proc.offset
                log.info("partition %d: restored %d devices, resuming at offset %d",
                         tp.partition, proc.devices(), proc.offset)
            else:
                proc = PartitionProcessor(tp.partition, self.config)
                start = committed.get(tp.partition, -1001)
                if start >= 0:
                    log.warning("partition %d: no checkpoint; starting at the group's committed "
                                "offset %d with empty state", tp.partition, start)
                    tp.offset = start
                else:
                    log.info("partition %d: no checkpoint; starting at the beginning", tp.partition)
                    tp.offset = OFFSET_BEGINNING
            self._owned[tp.partition] = proc
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.partition in self._owned]
        try:
            self.checkpoint(mine)
        except ProcessorsFailed as exc:
            log.error("partitions %s revoked without a checkpoint: %s", mine, exc)
        for p in mine:
            del self._owned[p]
        log.info("partitions %s handed back", mine)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._owned.pop(tp.partition, None)
        log.warning("partitions %s lost (another member owns them now)",
                    [tp.partition for tp in partitions])

    # -- topics -------------------------------------------------------------------------

    def ensure_topics(self) -> None:
        """Create the outputs and the checkpoint topic if missing; the checkpoint topic
        gets as many partitions as ``telemetry``."""
        topics = self.config.topics
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap, **self.config.client})
        deadline = time.monotonic() + 60
        warned = 0.0
        while True:  # the log may still be starting, and the bridge creates telemetry
            try:
                meta = admin.list_topics(timeout=5)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise ProcessorsFailed(f"cannot reach the log at {self.config.bootstrap}: {exc}") from None
                log.warning("waiting for the log at %s", self.config.bootstrap)
                continue
            source = meta.topics.get(topics.telemetry)
            if source is not None and source.error is None and source.partitions:
                break
            if self._stop.is_set():
                raise ProcessorsFailed("stopped while waiting for the input topic")
            if time.monotonic() - warned > 10:
                warned = time.monotonic()
                log.warning("waiting for topic %r to exist (the gateway bridge creates it; or name "
                            "another in [topics] telemetry)", topics.telemetry)
            time.sleep(0.5)
        partitions = len(source.partitions)
        wanted = [
            NewTopic(topics.alerts, num_partitions=partitions, replication_factor=-1),
            NewTopic(topics.device_state, num_partitions=partitions, replication_factor=-1,
                     config={"cleanup.policy": "compact"}),
            NewTopic(topics.late, num_partitions=1, replication_factor=-1),
            NewTopic(topics.checkpoints, num_partitions=partitions, replication_factor=-1,
                     config={"cleanup.policy": "compact",
                             "max.message.bytes": str(CHECKPOINT_MAX_BYTES)}),
        ]
        missing = [t for t in wanted if t.topic not in meta.topics]
        if missing:
            for topic, future in admin.create_topics(missing, operation_timeout=10).items():
                try:
                    future.result(timeout=15)
                    log.info("created topic %s", topic)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise ProcessorsFailed(f"cannot create topic {topic}: {exc}") from None
        existing = meta.topics.get(topics.checkpoints)
        if existing is not None and len(existing.partitions) < partitions:
            log.warning("growing %s to %d partitions like %s", topics.checkpoints, partitions,
                        topics.telemetry)
            for future in admin.create_partitions(
                    [NewPartitions(topics.checkpoints, partitions)]).values():
                future.result(timeout=15)

    # -- reporting and closing -------------------------------------------------------

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < 30:
            return
        events = sum(p.events for p in self._owned.values())
        log.info("processors %s: partitions=%s devices=%d events=%d (%.0f/s) alerts=%d late=%d "
                 "invalid=%d duplicates=%d", self.client_id, sorted(self._owned),
                 sum(p.devices() for p in self._owned.values()), events,
                 max(0, events - self._events_at_report) / (now - self._last_report),
                 sum(p.alerts for p in self._owned.values()), sum(p.late for p in self._owned.values()),
                 sum(p.invalid for p in self._owned.values()),
                 sum(p.duplicates for p in self._owned.values()))
        self._last_report, self._events_at_report = now, events

    def _close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("leaving the group: %s", exc)
        self._reader.close()
        self._producer.flush(5)

