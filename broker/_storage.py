"""The on-disk log of one partition: `PartitionLog` is the face the server uses.

A partition directory holds:

* `<20-digit base offset>.log` / `.index` / `.timeindex` segments (see `_segment`);
* `leader-epoch-checkpoint` (Kafka's format, see `_epochs`);
* `recovery-point`, `high-watermark` and `log-start-offset` checkpoints (one integer);
* `<offset>.snapshot` idempotent-producer snapshots (JSON), written at roll and close;
* `.clean-shutdown`, written by close() and removed by open();
* `cleaner-offset-checkpoint` and, during a compaction swap, `cleaner-swap` plus
  `.cleaned` / `.swap` files (see `_compaction`).

Crash guarantee: whatever reached os.write before a SIGKILL is recovered whole except a
torn last batch; whatever was flush()ed survives power loss. Recovery never drops a
valid batch that precedes the first bad one.

A PartitionLog is not thread-safe: the caller serialises calls (one event loop, or a lock).
"""

from __future__ import annotations

import bisect
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker._batch import (
    LOG_OVERHEAD,
    CorruptRecordError,
    InvalidRecordError,
    StorageError,
    fast_constructor,
    header_of,
    parse_batches,
    parse_raw,
    rewrite_batch,
    whole_batches_length,
)
from broker._compaction import (
    CLEANER_CHECKPOINT,
    CompactionConfig,
    CompactionPlan,
    CompactionResult,
    SourceSegment,
    commit_swap,
    discard_result,
    read_cleaner_checkpoint,
    recover_interrupted_compaction,
)
from broker._epochs import LeaderEpochCache, read_checkpoint, write_checkpoint
from broker._producer_state import (
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    ProducerEntry,
    ProducerStateTable,
)
from broker._segment import MAX_SEGMENT_POSITION, SCAN_CHUNK, Segment, segment_name

__all__ = [
    "AppendResult",
    "CorruptRecordError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "LeaderEpochCache",
    "LogConfig",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionLog",
    "ProducerEntry",
    "ReadResult",
    "RecordTooLargeError",
    "StorageError",
]

log = logging.getLogger("vigil.broker")

CLEAN_SHUTDOWN = ".clean-shutdown"
RECOVERY_POINT = "recovery-point"
HIGH_WATERMARK = "high-watermark"
CHECKPOINT_INTERVAL = 1.0  # seconds between recovery-point / high-watermark checkpoints
LOG_START_OFFSET = "log-start-offset"
EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
SNAPSHOTS_KEPT = 3


class RecordTooLargeError(StorageError):
    """A batch is larger than max_message_bytes (or than a whole segment)."""


class OffsetOutOfRangeError(StorageError):
    """A requested offset is below the log start or above the log end."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1: forever
    retention_bytes: int = -1  # -1: unlimited, per partition
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1048588
    tail_cache_bytes: int = 8 << 20  # recently appended batches kept in memory for reads


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time: int
    log_start_offset: int
    record_count: int
    bytes: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches from the one containing the requested offset, in order."""

    chunks: list[bytes | memoryview] = field(default_factory=list)
    size: int = 0
    log_start_offset: int = 0
    log_end_offset: int = 0


_new_result = fast_constructor(AppendResult)


class _TailCache:
    """The most recently appended batches, in offset order, up to a byte budget."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._bases: list[int] = []
        self._lasts: list[int] = []
        self._views: list[memoryview] = []
        self._bytes = 0

    def add(self, base: int, last: int, view: memoryview) -> None:
        self._bases.append(base)
        self._lasts.append(last)
        self._views.append(view)
        self._bytes += len(view)
        if self._bytes > self.capacity:
            drop = 0
            while self._bytes > self.capacity // 2 and drop < len(self._views) - 1:
                self._bytes -= len(self._views[drop])
                drop += 1
            del self._bases[:drop], self._lasts[:drop], self._views[:drop]

    def read(self, offset: int, max_bytes: int, limit: int) -> list[bytes | memoryview] | None:
        """Batches from the one containing `offset`; None if it is not cached."""
        if not self._bases or offset < self._bases[0]:
            return None
        i = bisect.bisect_right(self._bases, offset) - 1
        if self._lasts[i] < offset:
            return None
        chunks: list[bytes | memoryview] = []
        total = 0
        n = len(self._views)
        while i < n and self._lasts[i] < limit:
            view = self._views[i]
            if chunks and total + len(view) > max_bytes:
                break
            chunks.append(view)
            total += len(view)
            if total >= max_bytes:
                break
            i += 1
        return chunks

    def drop_below(self, offset: int) -> None:
        """Forget batches starting below `offset` (they were rewritten on disk)."""
        drop = bisect.bisect_left(self._bases, offset)
        for view in self._views[:drop]:
            self._bytes -= len(view)
        del self._bases[:drop], self._lasts[:drop], self._views[:drop]

    def truncate(self, offset: int) -> None:
        while self._lasts and self._lasts[-1] >= offset:
            self._bases.pop()
            self._lasts.pop()
            self._bytes -= len(self._views.pop())

    def clear(self) -> None:
        self._bases.clear()
        self._lasts.clear()
        self._views.clear()
        self._bytes = 0


class PartitionLog:
    """The log of one partition: append, read, flush, roll, retain, truncate, recover."""

    def __init__(self, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        self.epochs = LeaderEpochCache.load(directory / EPOCH_CHECKPOINT)
        self.unflushed_bytes = 0
        self.unflushed_messages = 0
        self.last_flush_monotonic = time.monotonic()
        self._last_checkpoint = 0.0
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._unflushed: list[Segment] = []
        self._producers = ProducerStateTable()
        self._cache = _TailCache(config.tail_cache_bytes)
        self._log_start = 0
        self._leo = 0
        self._hw = 0
        self._recovery_point = 0
        self._cleaner_checkpoint = 0
        self._cleaning: tuple[CompactionPlan, list[Segment]] | None = None
        self._closed = False
        self._segment_ms = config.segment_ms
        self._segment_limit = min(config.segment_bytes, MAX_SEGMENT_POSITION)

    # -- opening and recovery ----------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config: LogConfig) -> PartitionLog:
        """Open the partition in `directory`, creating it, or recovering it after a crash."""
        directory.mkdir(parents=True, exist_ok=True)
        self = cls(directory, config)
        marker = directory / CLEAN_SHUTDOWN
        clean = marker.exists()
        marker.unlink(missing_ok=True)
        for tmp in directory.glob("*.tmp"):
            tmp.unlink()
        recover_interrupted_compaction(directory)
        self._cleaner_checkpoint = read_cleaner_checkpoint(directory)
        now_ms = int(time.time() * 1000)
        bases = sorted(int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit())
        recovery_point = _read_int(directory / RECOVERY_POINT)
        if clean or recovery_point is None:
            recovery_point = 0 if not clean else -1
        self._load_segments(bases, clean, recovery_point, now_ms)
        if not self._segments:
            start = max(_read_int(directory / LOG_START_OFFSET) or 0, 0)
            self._add_segment(Segment.create(directory, start, config.index_interval_bytes, now_ms))
        self._leo = self._segments[-1].next_offset
        first = self._segments[0].base_offset
        self._log_start = min(max(_read_int(directory / LOG_START_OFFSET) or first, first), self._leo)
        self._recovery_point = self._leo if clean else min(max(recovery_point, 0), self._leo)
        self._hw = _clamp(_read_int(directory / HIGH_WATERMARK) or 0, self._log_start, self._leo)
        self.epochs.truncate_from_end(self._leo)
        self.epochs.truncate_from_start(self._log_start)
        self._rebuild_producer_state()
        log.info("opened partition log %s: log start %d, end %d, %d segment(s), %s",
                 directory, self._log_start, self._leo, len(self._segments),
                 "clean" if clean else f"recovered from offset {self._recovery_point}")
        return self

    def _load_segments(self, bases: list[int], clean: bool, recovery_point: int,
                       now_ms: int) -> None:
        interval = self.config.index_interval_bytes
        first_to_recover = len(bases)
        if not clean and bases:
            first_to_recover = max(bisect.bisect_right(bases, recovery_point) - 1, 0)
        for i, base in enumerate(bases):
            if i < first_to_recover:
                self._add_segment(Segment.load(self.directory, base, interval, now_ms))
                continue
            seg = Segment(self.directory, base, interval)
            dropped = seg.recover()
            seg._init_created_ms(now_ms)
            self._add_segment(seg)
            self._unflushed.append(seg)
            if dropped:
                later = bases[i + 1 :]
                lost = sum((self.directory / f"{segment_name(b)}.log").stat().st_size
                           for b in later)
                if later:
                    log.warning("deleting %d segment(s) (%d bytes) after the corrupt batch in %s",
                                len(later), lost, seg.log_path)
                for b in later:
                    Segment(self.directory, b, interval).delete()
                break

    def _add_segment(self, seg: Segment) -> None:
        self._segments.append(seg)
        self._bases.append(seg.base_offset)

    def _rebuild_producer_state(self) -> None:
        """Latest snapshot at or below the log end, plus the batches after it."""
        table = ProducerStateTable()
        start = self._log_start
        for offset, path in reversed(self._snapshots()):
            if offset > self._leo:
                path.unlink()
                continue
            text = read_checkpoint(path)
            try:
                table = ProducerStateTable.from_json(text or "")
            except ValueError as exc:
                log.warning("ignoring producer snapshot %s: %s", path, exc)
                continue
            start = max(offset, self._log_start)
            break
        replayed = 0
        for seg in self._segments[max(bisect.bisect_right(self._bases, start) - 1, 0):]:
            for h in seg.scan(seg.index_position(start), chunk=SCAN_CHUNK):
                if h.base_offset >= start and h.producer_id >= 0:
                    table.load_batch(h)
                    replayed += 1
        if replayed:
            log.info("replayed %d producer batch(es) from offset %d in %s", replayed, start,
                     self.directory)
        self._producers = table

    def _snapshots(self) -> list[tuple[int, Path]]:
        found = [(int(p.stem), p) for p in self.directory.glob("*.snapshot") if p.stem.isdigit()]
        return sorted(found)

    def _write_snapshot(self) -> None:
        path = self.directory / f"{segment_name(self._leo)}.snapshot"
        write_checkpoint(path, self._producers.to_json(self._leo))
        snaps = self._snapshots()
        for offset, old in snaps[:-SNAPSHOTS_KEPT]:
            if offset <= self._leo:
                old.unlink()

    # -- positions -----------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """The first offset still stored."""
        return self._log_start

    @property
    def log_end_offset(self) -> int:
        """The next offset to be assigned (LEO)."""
        return self._leo

    @property
    def high_watermark(self) -> int:
        return self._hw

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._hw = _clamp(offset, self._log_start, self._leo)

    @property
    def recovery_point(self) -> int:
        """Offset below which data is known to be on stable storage."""
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(seg.size for seg in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # -- appending -------------------------------------------------------------------

    def append(self, records: bytes | memoryview, *, leader_epoch: int,
               now_ms: int) -> AppendResult:
        """Validate a producer's Records blob, assign offsets from the log end, write it.

        Raises CorruptRecordError, InvalidRecordError, RecordTooLargeError,
        InvalidProducerEpochError or OutOfOrderSequenceError; on any error nothing is
        written. A retried idempotent batch is not written again: the result has
        duplicate=True and the offsets it got the first time.
        """
        raw = parse_raw(records)
        if not raw:
            raise InvalidRecordError("produce request carries no record batches")
        limit = self.config.max_message_bytes
        base = self._leo
        if len(raw) == 1:  # the usual produce request: one batch
            position, f = raw[0]
            size = LOG_OVERHEAD + f[1]
            placed = [(base, f[8], position, size)]
            next_offset = base + f[6] + 1
            count = f[12]
            idempotent = f[9] >= 0
            if size > limit:
                raise RecordTooLargeError(
                    f"batch at byte {position} is {size} bytes, above max.message.bytes {limit}"
                )
        else:
            next_offset = base
            count = 0
            placed = []  # (offset, max ts, position, size)
            idempotent = False
            for position, f in raw:
                size = LOG_OVERHEAD + f[1]
                if size > limit:
                    raise RecordTooLargeError(
                        f"batch at byte {position} is {size} bytes, above max.message.bytes "
                        f"{limit}"
                    )
                placed.append((next_offset, f[8], position, size))
                next_offset += f[6] + 1
                count += f[12]
                idempotent = idempotent or f[9] >= 0
        if len(records) > self.config.segment_bytes:
            raise RecordTooLargeError(
                f"{len(records)} bytes of records do not fit a {self.config.segment_bytes}-byte segment"
            )
        updates = None
        if idempotent:
            headers = [header_of(r) for r in raw]
            duplicate, updates = self._producers.plan(headers, [p[0] for p in placed])
            if duplicate is not None:
                return _new_result(duplicate.first_offset, duplicate.last_offset, -1,
                                   self._log_start, count, 0, True)
        # A writable view (the server hands over the received frame) is rewritten in
        # place; anything else is copied first.
        buf = records if isinstance(records, memoryview) and not records.readonly else bytearray(records)
        for offset, _, position, _ in placed:
            rewrite_batch(buf, position, offset, leader_epoch)
        self._write(buf, placed, next_offset, count, now_ms)
        if updates:
            self._producers.apply(updates)
        if leader_epoch > self.epochs.latest_epoch:
            self.epochs.assign(leader_epoch, base)
        return _new_result(base, next_offset - 1, -1, self._log_start, count, len(buf), False)

    def append_replica(self, records: bytes | memoryview) -> None:
        """Follower path: store batches with their own offsets and leader epochs.

        The first batch must start exactly at the log end; CRCs are checked.
        """
        headers = parse_batches(records, verify_crc=True)
        if not headers:
            return
        if headers[0].base_offset != self._leo:
            raise StorageError(
                f"replica append starts at offset {headers[0].base_offset}, "
                f"log end is {self._leo}"
            )
        expected = self._leo
        count = 0
        for h in headers:
            if h.base_offset < expected:
                raise InvalidRecordError(
                    f"replica batch at offset {h.base_offset} overlaps the previous one "
                    f"(expected >= {expected})"
                )
            expected = h.last_offset + 1
            count += h.record_count
        placed = [(h.base_offset, h.max_timestamp, h.position, h.size) for h in headers]
        self._write(bytes(records), placed, expected, count, int(time.time() * 1000))
        for h in headers:
            self._producers.load_batch(h)
            if h.partition_leader_epoch > self.epochs.latest_epoch:
                self.epochs.assign(h.partition_leader_epoch, h.base_offset)

    def _write(self, buf: bytes | bytearray | memoryview, placed: list[tuple[int, int, int, int]],
               next_offset: int, count: int, now_ms: int) -> None:
        """Write whole batches; `placed` is (offset, max timestamp, position, size) each."""
        seg = self._segments[-1]
        if seg.size and (
            now_ms - seg.created_ms >= self._segment_ms
            or seg.size + len(buf) > self._segment_limit
            or next_offset - 1 - seg.base_offset > MAX_SEGMENT_POSITION
        ):
            seg = self._roll(now_ms)
        if not seg.size:
            seg.created_ms = now_ms
        seg.append(buf, placed, next_offset)
        if not self._unflushed or self._unflushed[-1] is not seg:
            self._unflushed.append(seg)
        view = memoryview(buf)
        if len(placed) == 1:
            self._cache.add(placed[0][0], next_offset - 1, view)
        else:
            for i, (offset, _, position, size) in enumerate(placed):
                last = placed[i + 1][0] - 1 if i + 1 < len(placed) else next_offset - 1
                self._cache.add(offset, last, view[position : position + size])
        self._leo = next_offset
        self.unflushed_bytes += len(buf)
        self.unflushed_messages += count

    def _roll(self, now_ms: int) -> Segment:
        old = self._segments[-1]
        old.seal()
        seg = Segment.create(self.directory, self._leo, self.config.index_interval_bytes, now_ms)
        self._add_segment(seg)
        self._write_snapshot()
        log.debug("rolled %s to a new segment at offset %d", self.directory, self._leo)
        return seg

    # -- reading -----------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> ReadResult:
        """Whole batches starting with the one containing `offset`.

        Stops before a batch whose last offset is >= max_offset (the high watermark) and
        before exceeding max_bytes, but always returns at least one whole batch when one
        is available (KIP-74). offset == log end gives an empty result.
        """
        if offset < self._log_start or offset > self._leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log [{self._log_start}, {self._leo}]"
            )
        limit = self._leo if max_offset is None else min(max_offset, self._leo)
        chunks = self._cache.read(offset, max_bytes, limit) if offset < limit else []
        if chunks is None:
            chunks = self._read_disk(offset, max_bytes, limit)
        return ReadResult(chunks, sum(len(c) for c in chunks), self._log_start, self._leo)

    def _read_disk(self, offset: int, max_bytes: int, limit: int) -> list[bytes | memoryview]:
        chunks: list[bytes | memoryview] = []
        total = 0
        i = max(bisect.bisect_right(self._bases, offset) - 1, 0)
        while i < len(self._segments) and (total < max_bytes or not chunks):
            seg = self._segments[i]
            i += 1
            if not chunks:
                found = seg.locate(offset)
                if found is None:
                    continue
                if found.last_offset >= limit:
                    break
                position, first_size = found.position, found.size
            else:
                position, first_size = 0, 0
            budget = min(max_bytes - total, seg.size - position)
            if not chunks and first_size > budget:
                budget = first_size  # KIP-74: the first batch goes out whole regardless
            if budget <= 0:
                break
            data = seg.pread(position, budget)
            length = whole_batches_length(data, limit)
            if length == 0:
                break
            chunks.append(data if length == len(data) else memoryview(data)[:length])
            total += length
            if position + length < seg.size:
                break  # stopped inside this segment: by size or by limit
        return chunks

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first batch whose max timestamp is >= timestamp_ms.

        Batch granularity: the offset is the batch's base offset (or the log start if the
        batch straddles it) and the timestamp is the batch's max timestamp, which is what a
        consumer seeking by time needs (it starts at that batch). None when no batch is
        that recent.
        """
        i = max(bisect.bisect_right(self._bases, self._log_start) - 1, 0)
        for seg in self._segments[i:]:
            h = seg.find_timestamp(timestamp_ms, self._log_start)
            if h is not None:
                return max(h.base_offset, self._log_start), h.max_timestamp
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the batch with the greatest max timestamp (ListOffsets -3).

        Batch granularity: the offset is that batch's base offset.
        """
        best: tuple[int, int] | None = None
        for seg in self._segments:
            if seg.max_timestamp >= 0 and (best is None or seg.max_timestamp > best[1]):
                best = (max(seg.offset_of_max_timestamp, self._log_start), seg.max_timestamp)
        return best

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (epoch, end offset), (-1, -1) if unknown."""
        return self.epochs.end_offset_for(epoch, self._leo)

    def producer_state(self, producer_id: int) -> ProducerEntry | None:
        """A copy of what the log knows of an idempotent producer, or None."""
        entry = self._producers.get(producer_id)
        if entry is None:
            return None
        return ProducerEntry(entry.producer_id, entry.epoch, list(entry.batches))

    # -- durability ---------------------------------------------------------------------

    def flush(self) -> None:
        """fdatasync what was written since the last flush, then checkpoint the recovery
        point and high watermark."""
        for seg in self._unflushed:
            seg.flush()
        self._unflushed = [self._segments[-1]] if self._segments[-1].dirty else []
        self._recovery_point = self._leo
        now = time.monotonic()
        # The checkpoints only save recovery work, so they are written at most once per
        # CHECKPOINT_INTERVAL (and at close), not at every flush: with flush.messages=1
        # that is every produce request, and two file replacements each cost more than
        # the fsync itself.
        if now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
            self._write_checkpoints()
        self.unflushed_bytes = 0
        self.unflushed_messages = 0
        self.last_flush_monotonic = now

    def _write_checkpoints(self) -> None:
        write_checkpoint(self.directory / RECOVERY_POINT, f"{self._recovery_point}\n", durable=False)
        write_checkpoint(self.directory / HIGH_WATERMARK, f"{self._hw}\n", durable=False)
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Flush, snapshot producer state, mark the shutdown clean and close files."""
        if self._closed:
            return
        self.flush()
        self._write_snapshot()
        write_checkpoint(self.directory / HIGH_WATERMARK, f"{self._hw}\n", durable=False)
        write_checkpoint(self.directory / RECOVERY_POINT, f"{self._leo}\n")
        write_checkpoint(self.directory / CLEAN_SHUTDOWN, "")
        for seg in self._segments:
            seg.close()
        self._cache.clear()
        self._closed = True

    def delete(self) -> None:
        """Close the log and remove its directory (topic deletion)."""
        if not self._closed:
            for seg in self._segments:
                seg.close()
            self._closed = True
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- compaction (see _compaction for the whole protocol) ------------------------------

    @property
    def cleaner_checkpoint(self) -> int:
        """Offset below which the log has been compacted at least once."""
        return self._cleaner_checkpoint

    @property
    def compaction_running(self) -> bool:
        return self._cleaning is not None

    def compaction_plan(self, now_ms: int, config: CompactionConfig) -> CompactionPlan | None:
        """What a compaction pass would clean now, or None (nothing due, or one running).

        Cheap; call on the loop thread, run the plan with `run_compaction` anywhere,
        then call `finish_compaction` (or `abort_compaction` if it raised) here.
        Cleanable: sealed segments wholly below the high watermark, up to the first
        dirty one younger than min.compaction.lag.ms (by its max timestamp); due when
        dirty bytes / (clean + dirty bytes) >= min.cleanable.dirty.ratio.
        """
        if self._closed or self._cleaning is not None:
            return None
        dirty_start = max(self._cleaner_checkpoint, self._log_start)
        lag_limit = now_ms - config.min_compaction_lag_ms
        segs = self._segments
        count = 0
        for i in range(len(segs) - 1):  # never the active segment
            end = segs[i + 1].base_offset
            if end > self._hw or (end > dirty_start and segs[i].max_timestamp > lag_limit):
                break
            count = i + 1
        if count == 0 or dirty_start >= segs[count].base_offset:
            return None
        sources = tuple(
            SourceSegment(seg.base_offset, segs[i + 1].base_offset, seg.size, seg.log_path)
            for i, seg in enumerate(segs[:count])
        )
        dirty = sum(s.size for s in sources if s.end_offset > dirty_start)
        total = sum(s.size for s in sources)
        if dirty == 0 or dirty / total < config.min_cleanable_dirty_ratio:
            return None
        plan = CompactionPlan(
            self.directory, sources, dirty_start, segs[count].base_offset, now_ms,
            config.delete_retention_ms, config.max_map_entries, self._segment_limit,
            self.config.index_interval_bytes,
        )
        self._cleaning = (plan, segs[:count])
        return plan

    def finish_compaction(self, result: CompactionResult) -> bool:
        """Swap a finished pass's segments in (loop thread). False if the log changed
        underneath (retention, truncation, close) and the result was discarded.

        The result may come from another process (plans and results pickle): it is
        matched to the running plan by value."""
        cleaning, self._cleaning = self._cleaning, None
        plan = result.plan
        if cleaning is None or cleaning[0] != plan or self._closed or not all(
            a is b and a.size == src.size
            for a, b, src in zip(self._segments, cleaning[1], plan.sources, strict=False)
        ) or len(self._segments) <= len(cleaning[1]):
            log.info("discarding a compaction of %s: the log changed meanwhile", self.directory)
            discard_result(self.directory)
            return False
        replaced = sum(len(s.replaces) for s in result.segments)
        commit_swap(result)
        now_ms = int(time.time() * 1000)
        interval = self.config.index_interval_bytes
        new = [Segment.load(self.directory, s.base_offset, interval, now_ms)
               for s in result.segments]
        old = self._segments[:replaced]
        self._segments[:replaced] = new
        self._bases[:replaced] = [seg.base_offset for seg in new]
        for seg in old:
            if seg in self._unflushed:
                self._unflushed.remove(seg)
            seg.close()
        self._cache.drop_below(result.cleaned_to)
        self._cleaner_checkpoint = result.cleaned_to
        log.info("compacted %s below offset %d: %d segment(s) into %d, %d -> %d bytes, "
                 "%d of %d records kept", self.directory, result.cleaned_to, replaced, len(new),
                 result.bytes_before, result.bytes_after, result.records_kept,
                 result.records_read)
        return True

    def abort_compaction(self, plan: CompactionPlan) -> None:
        """Forget a plan whose run failed (loop thread); removes its `.cleaned` files."""
        if self._cleaning is not None and self._cleaning[0] == plan:
            self._cleaning = None
            discard_result(self.directory)

    # -- shrinking -------------------------------------------------------------------------

    def roll_and_retain(self, now_ms: int) -> int:
        """Roll the active segment if it is too old, then delete whole old segments past
        retention_ms (by their largest timestamp) or retention_bytes. The active segment
        is never deleted. Returns the bytes deleted."""
        active = self._segments[-1]
        if active.size and now_ms - active.created_ms >= self.config.segment_ms:
            self._roll(now_ms)
        deleted = 0
        retention_ms = self.config.retention_ms
        if retention_ms >= 0:
            while (len(self._segments) > 1
                   and self._segments[0].max_timestamp < now_ms - retention_ms):
                deleted += self._delete_oldest("retention.ms")
        retention_bytes = self.config.retention_bytes
        if retention_bytes >= 0:
            total = self.size_bytes
            while len(self._segments) > 1 and total - self._segments[0].size >= retention_bytes:
                size = self._delete_oldest("retention.bytes")
                total -= size
                deleted += size
        return deleted

    def delete_records_before(self, offset: int) -> None:
        """Advance the log start to `offset` (DeleteRecords); whole segments below it go.

        `offset` may not exceed the high watermark.
        """
        if offset > self._hw or offset < 0:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: high watermark is {self._hw}"
            )
        if offset <= self._log_start:
            return
        self._set_log_start(offset)
        while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
            self._delete_oldest("delete records")

    def _delete_oldest(self, reason: str) -> int:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        if seg in self._unflushed:
            self._unflushed.remove(seg)
        size = seg.size
        seg.delete()
        log.info("deleted segment %s (%d bytes) by %s", seg.log_path, size, reason)
        if self._segments[0].base_offset > self._log_start:
            self._set_log_start(self._segments[0].base_offset)
        return size

    def _set_log_start(self, offset: int) -> None:
        self._log_start = offset
        self._hw = max(self._hw, offset)
        write_checkpoint(self.directory / LOG_START_OFFSET, f"{offset}\n")
        self.epochs.truncate_from_start(offset)
        for snap_offset, path in self._snapshots()[:-1]:
            if snap_offset < offset:
                path.unlink()

    def truncate_to(self, offset: int) -> None:
        """Drop everything at or after `offset` (a follower diverged from its leader).

        A batch containing `offset` is dropped whole, so the new log end may be lower.
        """
        if offset >= self._leo:
            return
        now_ms = int(time.time() * 1000)
        if offset <= self._segments[0].base_offset:
            for seg in self._segments:
                seg.delete()
            self._segments, self._bases, self._unflushed = [], [], []
            start = max(offset, 0)
            self._add_segment(Segment.create(self.directory, start,
                                             self.config.index_interval_bytes, now_ms))
            self._leo = start
            self._set_log_start(start)
        else:
            i = bisect.bisect_right(self._bases, offset) - 1
            for seg in self._segments[i + 1 :]:
                if seg in self._unflushed:
                    self._unflushed.remove(seg)
                seg.delete()
            del self._segments[i + 1 :], self._bases[i + 1 :]
            seg = self._segments[-1]
            seg.truncate_to(offset)
            if seg not in self._unflushed:
                self._unflushed.append(seg)
            self._leo = seg.next_offset
            if self._log_start > self._leo:
                self._set_log_start(self._leo)
        self._hw = min(self._hw, self._leo)
        self._recovery_point = min(self._recovery_point, self._leo)
        if self._cleaner_checkpoint > self._leo:
            self._cleaner_checkpoint = self._leo
            write_checkpoint(self.directory / CLEANER_CHECKPOINT, f"{self._leo}\n")
        write_checkpoint(self.directory / RECOVERY_POINT, f"{self._recovery_point}\n")
        self._cache.truncate(self._leo)
        self.epochs.truncate_from_end(self._leo)
        self._rebuild_producer_state()
        log.info("truncated %s to offset %d", self.directory, self._leo)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _read_int(path: Path) -> int | None:
    text = read_checkpoint(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        log.warning("ignoring malformed checkpoint %s", path)
        return None
