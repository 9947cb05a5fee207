"""Log compaction: keep the latest record of every key in the sealed part of a log.

Kafka's cleaner is the model. One pass has three steps, so that the heavy part never
runs on the event loop and never touches a file anybody else writes:

1. `PartitionLog.compaction_plan(now_ms, config)` (loop thread, cheap) picks the sealed
   segments to clean and returns a `CompactionPlan`: paths, sizes and offsets only.
2. `run_compaction(plan)` (any thread; pure file I/O on sealed, immutable segments)
   builds an offset map key -> latest offset over the dirty range (from the cleaner
   checkpoint up to the first uncleanable offset), then rewrites the sealed segments
   into `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`), fsynced, and
   returns a `CompactionResult`.
3. `PartitionLog.finish_compaction(result)` (loop thread, short) checks the log did not
   change underneath (same segment objects, same sizes), then swaps the files in with
   the crash-safe protocol below and replaces the Segment objects. If anything changed
   it discards the result. `PartitionLog.abort_compaction(plan)` cleans up after a
   failed step 2.

`await compact(log, now_ms, config, executor=None)` runs the three steps with step 2 in a
worker thread (or the executor given, e.g. a process pool); `compact_now` runs them
inline (tests, tools).

What is kept, record by record, in the rewritten segments:

* a record without a key: always (Kafka rejects them at produce on compacted topics);
* a keyed record: iff its offset is the latest for its key in the offset map, or its key
  is not in the map at all (its latest version is then in the clean part, or it is);
* a tombstone (value None) that is kept by the rule above is dropped once its batch's
  max timestamp is older than now - delete.retention.ms. Measured against the batch max
  timestamp, not a file's mtime: mtimes change when the cleaner rewrites a file, batch
  timestamps do not, and tests can drive them. (With CreateTime it is the producer's
  clock; with LogAppendTime the broker's.)
* control batches: always, verbatim (this broker has no transactions).

A batch keeps its base offset and its original span (lastOffsetDelta), and offsets never
change, so compacted logs have gaps. A batch that keeps all its records is copied byte
for byte; one that keeps some is re-encoded with the same compression, producer fields,
leader epoch and attributes. A batch that keeps none is dropped, except the last batch
of each producer id among the rewritten segments, which stays as a header-only batch
(zero records, same sequence span) so that rebuilding idempotent producer state from
the log still finds the producer's epoch and last sequence.

Adjacent rewritten segments are merged while the result stays within segment.bytes
(counting the cleaned size so far plus the next source's full size) and its offsets
within an index's 32-bit range. A merged segment takes its first source's base offset,
so the log start never moves; a segment can end up empty.

Crash safety (the `.cleaned` -> `.swap` protocol):

1. worker: write `X.cleaned` files and fsync them;
2. finish: rename every `X.cleaned` to `X.swap`, fsync the directory;
3. finish: write the `cleaner-swap` manifest atomically (fsynced temp file, rename,
   directory fsync). This is the commit point of the whole pass;
4. finish: per merged segment, delete the source files it replaces, rename its index
   swaps and then `<base>.log.swap` to their final names;
5. finish: write the cleaner checkpoint, fsync the directory, delete the manifest.

On open, `recover_interrupted_compaction` redoes step 4-5 for every group still holding
a `.log.swap` when the manifest exists, and otherwise (no commit) deletes every
`.cleaned` and `.swap` file, leaving the original segments. So after a SIGKILL at any
moment either all sources or all their replacements are the log, never a mix of a
dropped tombstone with the older value it deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from broker._batch import HEADER_SIZE, BatchHeader, StorageError, parse_batches
from broker._epochs import read_checkpoint, write_checkpoint
from broker._records import Record, decode_records, encode_batch
from broker._segment import (
    MAX_SEGMENT_POSITION,
    SCAN_CHUNK,
    BatchScan,
    Segment,
    segment_name,
)

if TYPE_CHECKING:
    from broker._storage import PartitionLog

__all__ = [
    "CLEANER_CHECKPOINT",
    "SWAP_MANIFEST",
    "CompactedSegment",
    "CompactionConfig",
    "CompactionPlan",
    "CompactionResult",
    "SourceSegment",
    "compact",
    "compact_now",
    "recover_interrupted_compaction",
    "run_compaction",
]

log = logging.getLogger("vigil.broker")

CLEANER_CHECKPOINT = "cleaner-offset-checkpoint"
SWAP_MANIFEST = "cleaner-swap"
CLEANED = ".cleaned"
SWAP = ".swap"
_EXTENSIONS = (".index", ".timeindex", ".log")  # the log last: its rename ends a group


@dataclass(frozen=True, slots=True)
class CompactionConfig:
    """A topic's effective compaction settings, as numbers."""

    min_cleanable_dirty_ratio: float = 0.5
    delete_retention_ms: int = 24 * 3600 * 1000
    min_compaction_lag_ms: int = 0
    max_map_entries: int = 4_000_000
    """Soft bound on the offset map (Kafka's dedupe buffer): mapping stops at the end of
    the segment that reaches it, and the rest of the dirty range waits for the next pass."""


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """A sealed segment as the plan saw it. Its offsets all lie in [base, end)."""

    base_offset: int
    end_offset: int  # the next segment's base offset
    size: int
    log_path: Path


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    directory: Path
    sources: tuple[SourceSegment, ...]  # from the log's first segment, all sealed
    dirty_start: int  # first offset not known clean (cleaner checkpoint or log start)
    end: int  # first uncleanable offset: nothing at or past it is read or changed
    now_ms: int
    delete_retention_ms: int
    max_map_entries: int
    segment_bytes: int
    index_interval_bytes: int


@dataclass(frozen=True, slots=True)
class CompactedSegment:
    base_offset: int
    replaces: tuple[int, ...]  # base offsets of the source segments merged into it
    size: int


@dataclass(frozen=True, slots=True)
class CompactionResult:
    plan: CompactionPlan
    cleaned_to: int  # the new cleaner checkpoint: every source below it was rewritten
    segments: tuple[CompactedSegment, ...]
    records_read: int
    records_kept: int
    bytes_before: int
    bytes_after: int


# -- the worker part -----------------------------------------------------------------


def _batches(source: SourceSegment) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of a sealed segment file with its bytes, CRC checked."""
    fd = os.open(source.log_path, os.O_RDONLY)
    try:
        scan = BatchScan(fd, 0, source.size, verify_crc=True, chunk=SCAN_CHUNK)
        for h in scan:
            yield h, os.pread(fd, h.size, h.position)
        if scan.end != source.size:
            raise StorageError(f"cannot compact {source.log_path}: unreadable from byte "
                               f"{scan.end} ({scan.error})")
    finally:
        os.close(fd)


def _payload(data: bytes) -> memoryview:
    return memoryview(data)[HEADER_SIZE:]


def _build_offset_map(plan: CompactionPlan) -> tuple[dict[bytes, int], int]:
    """key -> latest offset over the dirty range, and the offset mapping stopped at."""
    latest: dict[bytes, int] = {}
    mapped_to = plan.dirty_start
    for source in plan.sources:
        if source.end_offset <= plan.dirty_start:
            continue
        for h, data in _batches(source):
            if h.last_offset < plan.dirty_start or h.is_control:
                continue
            for r in decode_records(h, _payload(data)):
                if r.key is not None and r.offset >= plan.dirty_start:
                    latest[r.key] = r.offset
        mapped_to = source.end_offset
        if len(latest) >= plan.max_map_entries:
            break
    return latest, mapped_to


def _last_batch_per_producer(sources: list[SourceSegment]) -> dict[int, int]:
    """producer id -> base offset of its last batch in `sources` (a header-only scan)."""
    last: dict[int, int] = {}
    for source in sources:
        fd = os.open(source.log_path, os.O_RDONLY)
        try:
            for h in BatchScan(fd, 0, source.size, verify_crc=False, chunk=SCAN_CHUNK):
                if h.producer_id >= 0:
                    last[h.producer_id] = h.base_offset
        finally:
            os.close(fd)
    return last


class _Output:
    """One merged segment being written under `.cleaned` names."""

    def __init__(self, plan: CompactionPlan, base_offset: int) -> None:
        for ext in _EXTENSIONS:
            (plan.directory / f"{segment_name(base_offset)}{ext}{CLEANED}").unlink(missing_ok=True)
        self.segment = Segment.create(plan.directory, base_offset, plan.index_interval_bytes,
                                      plan.now_ms, suffix=CLEANED)
        self.replaces: list[int] = []
        self._buf = bytearray()
        self._placed: list[tuple[int, int, int, int]] = []
        self._next_offset = base_offset

    @property
    def size(self) -> int:
        return self.segment.size + len(self._buf)

    def add(self, h: BatchHeader, data: bytes) -> None:
        self._placed.append((h.base_offset, h.max_timestamp, len(self._buf), len(data)))
        self._buf += data
        self._next_offset = h.last_offset + 1
        if len(self._buf) >= SCAN_CHUNK:
            self._write()

    def _write(self) -> None:
        if self._buf:
            self.segment.append(self._buf, self._placed, self._next_offset)
            self._buf = bytearray()
            self._placed = []

    def finish(self) -> CompactedSegment:
        self._write()
        self.segment.seal()
        self.segment.flush()
        size = self.segment.size
        self.segment.close()
        return CompactedSegment(self.segment.base_offset, tuple(self.replaces), size)


def _filter_batch(h: BatchHeader, data: bytes, latest: dict[bytes, int], tombstone_horizon: int,
                  keep_empty: bool) -> tuple[bytes | None, int, int]:
    """(the batch to write or None, records read, records kept)."""
    if h.is_control:
        return data, 0, 0
    records = decode_records(h, _payload(data))
    kept: list[Record] = []
    drop_tombstones = h.max_timestamp < tombstone_horizon
    for r in records:
        if r.key is not None and r.offset < latest.get(r.key, r.offset):
            continue  # a newer version exists
        if r.value is None and drop_tombstones:
            continue
        kept.append(r)
    if not kept and not keep_empty:  # also drops header-only batches no longer the last
        return None, len(records), 0
    if len(kept) == len(records):
        return data, len(records), len(kept)
    log_append_time = h.timestamp_type == 1
    rebuilt = encode_batch(
        kept, base_offset=h.base_offset, compression=h.compression, producer_id=h.producer_id,
        producer_epoch=h.producer_epoch, base_sequence=h.base_sequence,
        partition_leader_epoch=h.partition_leader_epoch, attributes_extra=h.attributes & ~0x07,
        last_offset_delta=h.last_offset_delta,
        max_timestamp=h.max_timestamp if log_append_time or not kept else None,
    )
    return rebuilt, len(records), len(kept)


def run_compaction(plan: CompactionPlan) -> CompactionResult:
    """Build the offset map and write the cleaned segments under `.cleaned` names.

    Touches only the plan's sealed segment files (read) and `.cleaned` files (write);
    safe in a worker thread. Raises StorageError or OSError when a source is unreadable
    (e.g. deleted by retention meanwhile); then call `PartitionLog.abort_compaction`.
    """
    started = time.monotonic()
    latest, cleaned_to = _build_offset_map(plan)
    sources = [s for s in plan.sources if s.end_offset <= cleaned_to]
    last_of_producer = _last_batch_per_producer(sources)
    horizon = plan.now_ms - plan.delete_retention_ms
    outputs: list[CompactedSegment] = []
    out: _Output | None = None
    read = kept = 0
    try:
        for source in sources:
            if out is not None and (
                out.size + source.size > plan.segment_bytes
                or source.end_offset - 1 - out.segment.base_offset > MAX_SEGMENT_POSITION
            ):
                outputs.append(out.finish())
                out = None
            if out is None:
                out = _Output(plan, source.base_offset)
            out.replaces.append(source.base_offset)
            for h, data in _batches(source):
                keep_empty = last_of_producer.get(h.producer_id) == h.base_offset
                batch, n_read, n_kept = _filter_batch(h, data, latest, horizon, keep_empty)
                read += n_read
                kept += n_kept
                if batch is not None:
                    if batch is data:
                        out.add(h, data)
                    else:
                        out.add(_reparsed(batch), batch)
        if out is not None:
            outputs.append(out.finish())
            out = None
    except BaseException:
        if out is not None:
            out.segment.delete()
        _delete_cleaned(plan.directory)
        raise
    result = CompactionResult(
        plan, cleaned_to, tuple(outputs), read, kept,
        sum(s.size for s in sources), sum(o.size for o in outputs),
    )
    log.debug("compacted %s up to offset %d in %.3f s: %d -> %d records, %d -> %d bytes",
              plan.directory, cleaned_to, time.monotonic() - started, read, kept,
              result.bytes_before, result.bytes_after)
    return result


def _reparsed(batch: bytes) -> BatchHeader:
    """The header of a batch this module just encoded."""
    return parse_batches(batch, verify_crc=False)[0]


# -- the switch-over (called from PartitionLog on the loop thread) ---------------------------


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete_cleaned(directory: Path) -> None:
    for path in directory.glob(f"*{CLEANED}"):
        path.unlink(missing_ok=True)


def discard_result(directory: Path) -> None:
    """Remove the `.cleaned` files of a pass that will not be swapped in."""
    _delete_cleaned(directory)


def _final(directory: Path, base: int, ext: str) -> Path:
    return directory / f"{segment_name(base)}{ext}"


def _manifest_text(result: CompactionResult) -> str:
    groups = [{"base": s.base_offset, "replaces": list(s.replaces)} for s in result.segments]
    return json.dumps({"version": 1, "cleaned_to": result.cleaned_to, "groups": groups})


def commit_swap(result: CompactionResult) -> None:
    """Steps 2-5 of the protocol: after it returns the directory holds the new segments."""
    directory = result.plan.directory
    for seg in result.segments:
        for ext in _EXTENSIONS:
            src = _final(directory, seg.base_offset, ext + CLEANED)
            src.rename(_final(directory, seg.base_offset, ext + SWAP))
    _fsync_directory(directory)
    write_checkpoint(directory / SWAP_MANIFEST, _manifest_text(result))
    _fsync_directory(directory)
    _apply_manifest(directory, json.loads(_manifest_text(result)))


def _apply_manifest(directory: Path, manifest: dict[str, object]) -> None:
    groups = manifest["groups"]
    assert isinstance(groups, list)
    for group in groups:
        base = int(group["base"])
        if not _final(directory, base, ".log" + SWAP).exists():
            continue  # this group was finished before
        for replaced in group["replaces"]:
            for ext in _EXTENSIONS:
                _final(directory, int(replaced), ext).unlink(missing_ok=True)
        for ext in _EXTENSIONS:
            swap = _final(directory, base, ext + SWAP)
            if swap.exists():
                swap.rename(_final(directory, base, ext))
    cleaned_to = manifest.get("cleaned_to")
    if isinstance(cleaned_to, int):
        write_checkpoint(directory / CLEANER_CHECKPOINT, f"{cleaned_to}\n")
    _fsync_directory(directory)
    (directory / SWAP_MANIFEST).unlink(missing_ok=True)
    for path in directory.glob(f"*{SWAP}"):
        path.unlink()
    _delete_cleaned(directory)


def recover_interrupted_compaction(directory: Path) -> None:
    """On open: finish a committed swap, or roll back an uncommitted one."""
    text = read_checkpoint(directory / SWAP_MANIFEST)
    if text is not None:
        try:
            manifest = json.loads(text)
            if not isinstance(manifest, dict) or manifest.get("version") != 1:
                raise ValueError(f"unsupported manifest {text[:80]!r}")
        except ValueError as exc:  # cannot happen with atomic writes; keep the sources
            log.error("ignoring unreadable compaction manifest in %s: %s", directory, exc)
        else:
            log.warning("finishing an interrupted compaction swap in %s", directory)
            _apply_manifest(directory, manifest)
            return
    leftovers = [*directory.glob(f"*{SWAP}"), *directory.glob(f"*{CLEANED}")]
    if leftovers:
        log.warning("removing %d file(s) of an unfinished compaction in %s", len(leftovers),
                    directory)
        for path in leftovers:
            path.unlink()
    (directory / SWAP_MANIFEST).unlink(missing_ok=True)


def read_cleaner_checkpoint(directory: Path) -> int:
    text = read_checkpoint(directory / CLEANER_CHECKPOINT)
    try:
        return int(text.strip()) if text else 0
    except ValueError:
        log.warning("ignoring malformed cleaner checkpoint in %s", directory)
        return 0


# -- driving a pass ------------------------------------------------------------------------


async def compact(plog: PartitionLog, now_ms: int, config: CompactionConfig,
                  executor: Executor | None = None) -> bool:
    """One pass with the heavy part in `executor` (default: a worker thread); call from
    the log's loop thread. Decoding records is CPU-bound Python that holds the GIL, so a
    ProcessPoolExecutor keeps the loop the most responsive (plans and results pickle).

    Returns True when cleaned segments were swapped in.
    """
    plan = plog.compaction_plan(now_ms, config)
    if plan is None:
        return False
    try:
        if executor is None:
            result = await asyncio.to_thread(run_compaction, plan)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(executor, run_compaction, plan)
    except BaseException:
        plog.abort_compaction(plan)
        raise
    return plog.finish_compaction(result)


def compact_now(plog: PartitionLog, now_ms: int, config: CompactionConfig) -> bool:
    """One pass inline on the calling thread (tests, tools)."""
    plan = plog.compaction_plan(now_ms, config)
    if plan is None:
        return False
    try:
        result = run_compaction(plan)
    except BaseException:
        plog.abort_compaction(plan)
        raise
    return plog.finish_compaction(result)
