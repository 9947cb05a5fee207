"""One broker node's state: its topics, the partition logs it hosts, producer ids.

The protocol handlers in ``_apis`` read and change this; it knows nothing of the wire.
Writes are durable per each topic's flush policy: with ``flush.messages=1`` (the default)
every append is fsynced before acks=1/all is answered and before consumers can see it
(the high watermark moves after the fsync). Appends that arrive in the same event-loop
turn share one fsync per partition (group commit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from broker._batch import InvalidRecordError, parse_batches, stamp_log_append_time
from broker._compaction import CompactionConfig, compact
from broker._config import TOPIC_CONFIGS, BrokerConfig, validate_topic_configs
from broker._records import decode_batches
from broker._storage import AppendResult, LogConfig, PartitionLog
from broker._topics import TopicMeta, TopicRegistry, write_atomic

__all__ = ["Node", "PartitionState"]

log = logging.getLogger("vigil.broker")

_PRODUCER_ID_BLOCK = 1000


@dataclass(eq=False)
class PartitionState:
    """A partition this node hosts, with its log and its waiting fetchers."""

    topic: TopicMeta
    index: int
    log: PartitionLog
    flush_messages: int
    flush_ms: int
    log_append_time: bool = False
    compacted: bool = False
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    appended: asyncio.Future[None] | None = None
    dirty: bool = False
    last_flush: float = field(default_factory=time.monotonic)

    @property
    def leader_epoch(self) -> int:
        return self.topic.leader_epochs[self.index]

    def data_arrived(self) -> asyncio.Future[None]:
        """A future that completes when the high watermark next moves."""
        if self.appended is None or self.appended.done():
            self.appended = asyncio.get_running_loop().create_future()
        return self.appended

    def _wake(self) -> None:
        if self.appended is not None and not self.appended.done():
            self.appended.set_result(None)
        self.appended = None


def _policies(configs: dict[str, str]) -> set[str]:
    return {p.strip() for p in configs["cleanup.policy"].split(",")}


def _log_config(configs: dict[str, str]) -> LogConfig:
    deletes = "delete" in _policies(configs)  # a compact-only topic keeps every key forever
    return LogConfig(
        segment_bytes=int(configs["segment.bytes"]),
        segment_ms=int(configs["segment.ms"]),
        retention_ms=int(configs["retention.ms"]) if deletes else -1,
        retention_bytes=int(configs["retention.bytes"]) if deletes else -1,
        index_interval_bytes=int(configs["index.interval.bytes"]),
        max_message_bytes=int(configs["max.message.bytes"]),
    )


def _compaction_config(configs: dict[str, str]) -> CompactionConfig:
    return CompactionConfig(
        min_cleanable_dirty_ratio=float(configs["min.cleanable.dirty.ratio"]),
        delete_retention_ms=int(configs["delete.retention.ms"]),
        min_compaction_lag_ms=int(configs["min.compaction.lag.ms"]),
    )


class Node:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = TopicRegistry(config.data_dir / "meta", config.node_id)
        self.logs_dir = config.data_dir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self._next_producer_id, self._producer_id_limit = 0, 0
        self._flush_scheduled: asyncio.Future[None] | None = None
        started = time.monotonic()
        for meta in self.registry.all():
            for index in range(meta.partition_count):
                self._open_partition(meta, index)
        if self.partitions:
            log.info("opened %d partitions of %d topics in %.2fs", len(self.partitions),
                     len(self.registry.all()), time.monotonic() - started)

    # -- topics ---------------------------------------------------------------------------

    def effective_configs(self, meta: TopicMeta) -> dict[str, str]:
        configs = {name: self.config.topic_default(name) for name in TOPIC_CONFIGS}
        configs.update(meta.configs)
        return configs

    def _partition_dir(self, meta: TopicMeta, index: int) -> Path:
        return self.logs_dir / f"{meta.name}-{index}"

    def _open_partition(self, meta: TopicMeta, index: int) -> PartitionState:
        configs = self.effective_configs(meta)
        plog = PartitionLog.open(self._partition_dir(meta, index), _log_config(configs))
        state = PartitionState(
            topic=meta, index=index, log=plog,
            flush_messages=max(1, int(configs["flush.messages"])),
            flush_ms=int(configs["flush.ms"]),
            log_append_time=configs["message.timestamp.type"] == "LogAppendTime",
            compacted="compact" in _policies(configs),
            compaction=_compaction_config(configs),
        )
        # A restarted single node may expose what is in its log: it was all acknowledged
        # or it would not have been fsynced / written.
        plog.high_watermark = plog.log_end_offset
        if plog.epochs.latest_epoch is not None and plog.epochs.latest_epoch > meta.leader_epochs[index]:
            meta.leader_epochs[index] = plog.epochs.latest_epoch
        self.partitions[(meta.name, index)] = state
        return state

    def partition(self, topic: str, index: int) -> PartitionState | None:
        return self.partitions.get((topic, index))

    def replica_assignment(self, partitions: int, replication_factor: int, first: int = 0) -> list[list[int]]:
        nodes = self.cluster_nodes()
        if replication_factor < 1 or replication_factor > len(nodes):
            raise ValueError(
                f"replication factor {replication_factor} is not between 1 and the "
                f"{len(nodes)} available broker(s)"
            )
        return [[nodes[(first + p + r) % len(nodes)] for r in range(replication_factor)]
                for p in range(partitions)]

    def cluster_nodes(self) -> list[int]:
        return [self.node_id]

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: dict[str, str | None],
        assignment: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
        internal: bool = False,
    ) -> TopicMeta | None:
        checked = validate_topic_configs(configs)
        replicas = assignment or self.replica_assignment(partitions, replication_factor)
        if validate_only:
            return None
        meta = self.registry.create(name, replicas, checked, internal=internal)
        for index in range(meta.partition_count):
            self._open_partition(meta, index)
        log.info("created topic %s with %d partitions", name, meta.partition_count)
        return meta

    def auto_create(self, name: str) -> TopicMeta:
        return self.create_topic(
            name, self.config.setting_int("num.partitions"),
            self.config.setting_int("default.replication.factor"), {},
        ) or self.registry.get(name)  # type: ignore[return-value]

    def delete_topic(self, name: str) -> TopicMeta:
        meta = self.registry.delete(name)
        for index in range(meta.partition_count):
            state = self.partitions.pop((name, index), None)
            if state is not None:
                state.log.close()
                state._wake()
            directory = self._partition_dir(meta, index)
            if directory.exists():
                trash = directory.with_name(f"{directory.name}.{uuid.uuid4().hex}-delete")
                directory.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
        log.info("deleted topic %s", name)
        return meta

    def add_partitions(self, name: str, total: int, assignment: list[list[int]] | None = None) -> None:
        meta = self.registry.get(name)
        assert meta is not None
        new = total - meta.partition_count
        replicas = assignment or self.replica_assignment(new, meta.replication_factor, meta.partition_count)
        self.registry.add_partitions(name, replicas)
        for index in range(meta.partition_count - new, meta.partition_count):
            self._open_partition(meta, index)

    def alter_configs(self, name: str, configs: dict[str, str]) -> None:
        meta = self.registry.get(name)
        assert meta is not None
        self.registry.set_configs(name, validate_topic_configs(configs))
        effective = self.effective_configs(meta)
        for index in range(meta.partition_count):
            state = self.partitions[(name, index)]
            state.flush_messages = max(1, int(effective["flush.messages"]))
            state.flush_ms = int(effective["flush.ms"])
            state.log_append_time = effective["message.timestamp.type"] == "LogAppendTime"
            state.compacted = "compact" in _policies(effective)
            state.compaction = _compaction_config(effective)
            state.log.config = _log_config(effective)

    # -- producer ids ---------------------------------------------------------------------

    def allocate_producer_id(self) -> int:
        if self._next_producer_id >= self._producer_id_limit:
            path = self.config.data_dir / "meta" / "producer-ids.json"
            start = json.loads(path.read_text())["next_block"] if path.exists() else 0
            write_atomic(path, json.dumps({"next_block": start + _PRODUCER_ID_BLOCK}).encode())
            self._next_producer_id, self._producer_id_limit = start, start + _PRODUCER_ID_BLOCK
        pid = self._next_producer_id
        self._next_producer_id += 1
        return pid

    # -- writes ---------------------------------------------------------------------------

    def append(self, state: PartitionState, records: bytes | memoryview) -> AppendResult:
        now_ms = int(time.time() * 1000)
        if state.compacted:
            for _, batch in decode_batches(records):
                if any(r.key is None for r in batch):
                    raise InvalidRecordError(
                        f"{state.topic.name} is a compacted topic: every record needs a key")
        if state.log_append_time:
            parse_batches(records, verify_crc=True)  # never re-sign a corrupt batch
            stamped = bytearray(records)
            stamp_log_append_time(stamped, now_ms)
            records = bytes(stamped)
        result = state.log.append(records, leader_epoch=state.leader_epoch, now_ms=now_ms)
        if state.log_append_time and not result.duplicate:
            result = dataclasses.replace(result, log_append_time=now_ms)
        if result.duplicate:
            return result
        if state.log.unflushed_messages >= state.flush_messages:
            state.dirty = True
        else:
            self._advance(state)
        return result

    def _advance(self, state: PartitionState) -> None:
        if state.log.high_watermark != state.log.log_end_offset:
            state.log.high_watermark = state.log.log_end_offset
            state._wake()

    def sync(self) -> asyncio.Future[None]:
        """Flush every partition whose policy asks for it; completes when done.

        Called after a batch of appends; all callers in one loop turn share the fsyncs.
        """
        fut = self._flush_scheduled
        if fut is None or fut.done():
            loop = asyncio.get_running_loop()
            fut = self._flush_scheduled = loop.create_future()
            loop.call_soon(self._flush_dirty, fut)
        return fut

    def _flush_dirty(self, fut: asyncio.Future[None]) -> None:
        self._flush_scheduled = None
        try:
            for state in self.partitions.values():
                if state.dirty:
                    state.log.flush()
                    state.dirty = False
                    state.last_flush = time.monotonic()
                    self._advance(state)
        except Exception as exc:
            log.exception("flush failed")
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(None)

    def flush_due(self, now: float) -> None:
        """Time-based flushes (flush.ms) and a periodic sweep."""
        for state in self.partitions.values():
            if state.log.unflushed_messages and (now - state.last_flush) * 1000 >= state.flush_ms:
                state.log.flush()
                state.last_flush = now
                self._advance(state)

    def enforce_retention(self) -> None:
        now_ms = int(time.time() * 1000)
        for state in list(self.partitions.values()):
            try:
                deleted = state.log.roll_and_retain(now_ms)
            except Exception:
                log.exception("retention failed for %s-%d", state.topic.name, state.index)
                continue
            if deleted:
                log.info("retention removed %d bytes from %s-%d", deleted, state.topic.name, state.index)

    async def compact_due(self) -> int:
        """One compaction pass over every compacted partition that has something to clean.

        The rewriting runs in a worker thread on sealed segments only; produce and fetch go
        on meanwhile. Returns how many partitions were compacted.
        """
        done = 0
        for state in list(self.partitions.values()):
            if not state.compacted or self.partitions.get((state.topic.name, state.index)) is not state:
                continue
            try:
                if await compact(state.log, int(time.time() * 1000), state.compaction):
                    done += 1
                    log.info("compacted %s-%d", state.topic.name, state.index)
            except Exception:
                log.exception("compaction of %s-%d failed", state.topic.name, state.index)
        return done

    def close(self) -> None:
        for state in self.partitions.values():
            try:
                state.log.close()
            except Exception:
                log.exception("closing %s-%d failed", state.topic.name, state.index)
        self.partitions.clear()

    def states(self, names: Iterable[str]) -> list[PartitionState]:
        return [s for (t, _), s in self.partitions.items() if t in set(names)]
