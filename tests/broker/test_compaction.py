"""Log compaction on real files: latest value per key, tombstones, concurrency, crashes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from broker._batch import BatchHeader
from broker._compaction import (
    CLEANER_CHECKPOINT,
    CompactionConfig,
    compact,
    compact_now,
    run_compaction,
)
from broker._epochs import write_checkpoint
from broker._records import Record, decode_batches, encode_batch
from broker._storage import LogConfig, PartitionLog

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000
CONFIG = LogConfig(segment_bytes=16_000, index_interval_bytes=1000, retention_ms=-1,
                   segment_ms=DAY)
EAGER = CompactionConfig(min_cleanable_dirty_ratio=0.0, delete_retention_ms=DAY)
ROOT = Path(__file__).resolve().parents[2]

Latest = dict[bytes, tuple[int, bytes | None]]


def _open(path: Path, config: LogConfig = CONFIG) -> PartitionLog:
    return PartitionLog.open(path, config)


def _produce(plog: PartitionLog, pairs: Sequence[tuple[bytes | None, bytes | None]], *,
             ts: int = NOW - 100_000, per_batch: int = 10, compression: int = 0,
             latest: Latest | None = None) -> None:
    """Append (key, value) pairs in batches; record each key's latest (offset, value)."""
    for i in range(0, len(pairs), per_batch):
        chunk = pairs[i : i + per_batch]
        records = [Record(j, ts + j, k, v) for j, (k, v) in enumerate(chunk)]
        result = plog.append(encode_batch(records, compression=compression), leader_epoch=0,
                             now_ms=NOW)
        if latest is not None:
            for j, (k, v) in enumerate(chunk):
                if k is not None:
                    latest[k] = (result.base_offset + j, v)
    plog.high_watermark = plog.log_end_offset


def _roll(plog: PartitionLog) -> None:
    """Seal the active segment (it is never compacted)."""
    plog.roll_and_retain(NOW + 2 * DAY)


def _read_all(plog: PartitionLog) -> list[tuple[int, Record]]:
    """(batch compression, record) of everything from the log start."""
    out: list[tuple[int, Record]] = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        result = plog.read(offset, 1 << 16)
        blob = b"".join(bytes(c) for c in result.chunks)
        if not blob:
            break
        batches = decode_batches(blob)
        for h, records in batches:
            out.extend((h.compression, r) for r in records if r.offset >= offset)
        offset = batches[-1][0].last_offset + 1
    return out


def _visible(plog: PartitionLog) -> Latest:
    seen: Latest = {}
    offsets = []
    for _, r in _read_all(plog):
        offsets.append(r.offset)
        if r.key is not None:
            seen[r.key] = (r.offset, r.value)
    assert offsets == sorted(set(offsets)), "offsets must increase strictly"
    return seen


def _versions(rng: random.Random, keys: int, versions: int) -> list[tuple[bytes | None, bytes | None]]:
    pairs: list[tuple[bytes | None, bytes | None]] = [
        (f"key-{k:04d}".encode(), f"value {v} of {k} ".encode() * 2)
        for v in range(versions) for k in range(keys)
    ]
    rng.shuffle(pairs)
    return pairs


def test_keeps_exactly_the_latest_value_of_every_key_at_its_original_offset(tmp_path: Path) -> None:
    rng = random.Random(1)
    plog = _open(tmp_path / "p")
    latest: Latest = {}
    _produce(plog, _versions(rng, 1000, 8), latest=latest)
    _roll(plog)
    segments_before = plog.segment_count
    size_before = plog.size_bytes
    assert segments_before > 20
    assert compact_now(plog, NOW + 1000, EAGER)
    records = _read_all(plog)
    assert [(r.key, r.offset, r.value) for _, r in records] == sorted(
        ((k, o, v) for k, (o, v) in latest.items()), key=lambda t: t[1])
    assert plog.size_bytes < size_before / 5
    assert plog.segment_count < segments_before  # small cleaned segments were merged
    assert plog.log_start_offset == 0 and plog.cleaner_checkpoint == plog.log_end_offset
    end = plog.log_end_offset
    # New writes go on at the same log end; reopening keeps everything.
    _produce(plog, [(b"key-0001", b"after")], latest=latest)
    assert plog.log_end_offset == end + 1
    plog.close()
    plog = _open(tmp_path / "p")
    assert _visible(plog) == latest
    assert not [p for p in (tmp_path / "p").iterdir() if p.suffix in (".cleaned", ".swap")]
    # Nothing dirty: no pass is due.
    assert plog.compaction_plan(NOW + 1000, EAGER) is None


def test_active_segment_and_records_above_the_high_watermark_are_untouched(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    latest: Latest = {}
    _produce(plog, _versions(random.Random(2), 200, 5), latest=latest)
    _roll(plog)
    _produce(plog, [(b"key-0000", b"v1"), (b"key-0000", b"v2")], latest=latest)
    active = sorted((tmp_path / "p").glob("*.log"))[-1]
    before = active.read_bytes()
    assert compact_now(plog, NOW, EAGER)
    assert active.read_bytes() == before
    values = [r.value for _, r in _read_all(plog) if r.key == b"key-0000"]
    # Both versions in the active segment stay, and so does the sealed one: the map only
    # covers sealed segments (as in Kafka), so it is the latest there.
    assert len(values) == 3 and values[1:] == [b"v1", b"v2"]
    # Sealed segments above the high watermark wait.
    _produce(plog, _versions(random.Random(3), 50, 2))
    _roll(plog)
    plog.high_watermark = plog.log_end_offset - 1
    assert plog.compaction_plan(NOW, EAGER) is None


def test_tombstones_kept_until_delete_retention_then_removed(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    _produce(plog, [(f"k{i}".encode(), b"old") for i in range(100)], ts=NOW)
    _produce(plog, [(f"k{i}".encode(), None) for i in range(0, 100, 2)], ts=NOW + 10_000)
    _roll(plog)
    config = CompactionConfig(min_cleanable_dirty_ratio=0.0, delete_retention_ms=60_000)
    # Before delete.retention.ms: the tombstone stays, the value it deletes goes.
    assert compact_now(plog, NOW + 10_000 + 30_000, config)
    seen = _visible(plog)
    assert len(seen) == 100
    assert [seen[f"k{i}".encode()][1] for i in range(100)] == [None, b"old"] * 50
    # Later, a pass (due to new dirty data) removes the old tombstones.
    _produce(plog, [(b"other", b"x")] * 5, ts=NOW + 200_000)
    _roll(plog)
    assert compact_now(plog, NOW + 300_000, config)
    seen = _visible(plog)
    assert sorted(seen) == sorted([f"k{i}".encode() for i in range(1, 100, 2)] + [b"other"])
    assert seen[b"other"][1] == b"x"


def test_dirty_ratio_and_min_compaction_lag_decide_when_a_pass_is_due(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    _produce(plog, _versions(random.Random(4), 100, 4), ts=NOW)
    _roll(plog)
    lagged = CompactionConfig(min_cleanable_dirty_ratio=0.0, min_compaction_lag_ms=60_000)
    assert plog.compaction_plan(NOW + 1_000, lagged) is None  # all too young
    assert compact_now(plog, NOW + 120_000, lagged)
    _produce(plog, [(b"key-0001", b"new")], ts=NOW)
    _roll(plog)
    strict = CompactionConfig(min_cleanable_dirty_ratio=0.9)
    assert plog.compaction_plan(NOW, strict) is None  # one small dirty segment
    assert compact_now(plog, NOW, EAGER)
    assert _visible(plog)[b"key-0001"][1] == b"new"


def test_compressed_batches_are_rebuilt_with_their_own_compression(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    latest: Latest = {}
    codec_of_offset: dict[int, int] = {}
    rng = random.Random(5)
    pairs = _versions(rng, 300, 6)
    for n, i in enumerate(range(0, len(pairs), 25)):
        start = plog.log_end_offset
        _produce(plog, pairs[i : i + 25], per_batch=25, compression=n % 5, latest=latest)
        for o in range(start, plog.log_end_offset):
            codec_of_offset[o] = n % 5
    _roll(plog)
    assert compact_now(plog, NOW, EAGER)
    records = _read_all(plog)
    assert {r.key: (r.offset, r.value) for _, r in records} == latest
    assert len(records) == len(latest)
    assert all(codec == codec_of_offset[r.offset] for codec, r in records)
    assert {codec for codec, _ in records} == {0, 1, 2, 3, 4}


def test_idempotent_producer_state_survives_when_its_batches_empty_out(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    seq = 0
    for _ in range(30):
        records = [Record(j, NOW, f"k{j}".encode(), b"from producer 7") for j in range(5)]
        plog.append(encode_batch(records, producer_id=7, producer_epoch=2, base_sequence=seq),
                    leader_epoch=0, now_ms=NOW)
        seq += 5
    _produce(plog, [(f"k{j}".encode(), b"overwritten") for j in range(5)] * 40)
    _roll(plog)
    assert compact_now(plog, NOW, EAGER)
    assert all(r.value == b"overwritten" for _, r in _read_all(plog))
    plog.close()
    for snap in (tmp_path / "p").glob("*.snapshot"):  # force a replay from the log
        snap.unlink()
    plog = _open(tmp_path / "p")
    state = plog.producer_state(7)
    assert state is not None and state.epoch == 2 and state.last_seq == seq - 1
    nxt = encode_batch([Record(0, NOW, b"k0", b"next")], producer_id=7, producer_epoch=2,
                       base_sequence=seq)
    assert not plog.append(nxt, leader_epoch=0, now_ms=NOW).duplicate
    _produce(plog, [(b"k0", b"overwritten again")])
    _roll(plog)
    assert compact_now(plog, NOW, EAGER)
    empty = [h for h, records in _batches_of(plog) if not records]
    # Only the producer's last batch stays as a header, not the one of the earlier pass.
    assert [(h.producer_id, h.base_sequence, h.record_count) for h in empty] == [(7, seq, 0)]


def _batches_of(plog: PartitionLog) -> list[tuple[BatchHeader, list[Record]]]:
    blob = b"".join(p.read_bytes() for p in sorted(plog.directory.glob("*.log")))
    return decode_batches(blob)


def test_reads_and_appends_go_on_while_the_worker_runs(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p", LogConfig(segment_bytes=16_000, index_interval_bytes=1000,
                                           retention_ms=-1, segment_ms=DAY, tail_cache_bytes=0))
    latest: Latest = {}
    _produce(plog, _versions(random.Random(6), 1000, 6), latest=latest)
    _roll(plog)
    plan = plog.compaction_plan(NOW, EAGER)
    assert plan is not None
    assert plog.compaction_plan(NOW, EAGER) is None  # one pass at a time
    results = []
    worker = threading.Thread(target=lambda: results.append(run_compaction(plan)))
    worker.start()
    reads = 0
    while worker.is_alive() or reads < 3:
        _produce(plog, [(b"key-0002", f"live {reads}".encode())], latest=latest)
        assert _visible(plog) == latest  # nothing is swapped yet: everything reads
        reads += 1
    worker.join()
    assert plog.finish_compaction(results[0])
    assert _visible(plog) == latest


def test_a_pass_is_discarded_when_the_log_changed_underneath(tmp_path: Path) -> None:
    plog = _open(tmp_path / "p")
    latest: Latest = {}
    _produce(plog, _versions(random.Random(7), 300, 5), latest=latest)
    _roll(plog)
    plan = plog.compaction_plan(NOW, EAGER)
    assert plan is not None
    result = run_compaction(plan)
    assert list((tmp_path / "p").glob("*.cleaned"))
    second_segment = plan.sources[1].base_offset
    plog.delete_records_before(second_segment)  # retention of the first segment
    assert not plog.finish_compaction(result)
    assert not list((tmp_path / "p").glob("*.cleaned"))
    assert {k: v for k, v in latest.items() if v[0] >= second_segment}.items() <= \
        _visible(plog).items()
    # A failed run is aborted; the next plan starts afresh.
    plan = plog.compaction_plan(NOW, EAGER)
    assert plan is not None
    plog.abort_compaction(plan)
    assert compact_now(plog, NOW, EAGER)


def test_compact_runs_the_heavy_part_in_a_thread(tmp_path: Path) -> None:
    import asyncio

    plog = _open(tmp_path / "p")
    latest: Latest = {}
    _produce(plog, _versions(random.Random(8), 100, 5), latest=latest)
    _roll(plog)
    assert asyncio.run(compact(plog, NOW, EAGER))
    assert _visible(plog) == latest
    # Or in another process: plans and results cross by pickling.
    _produce(plog, _versions(random.Random(9), 100, 2), latest=latest)
    _roll(plog)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert asyncio.run(compact(plog, NOW, EAGER, pool))
    assert _visible(plog) == latest


# -- SIGKILL at random moments ------------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
from broker._compaction import CompactionConfig, compact_now
from broker._storage import LogConfig, PartitionLog
directory = Path(sys.argv[1])
config = LogConfig(segment_bytes=4_000, index_interval_bytes=500, retention_ms=-1,
                   segment_ms=86_400_000)
print("ready", flush=True)
while True:
    (directory / "cleaner-offset-checkpoint").unlink(missing_ok=True)
    plog = PartitionLog.open(directory, config)
    plog.high_watermark = plog.log_end_offset
    compact_now(plog, 1_700_000_000_000, CompactionConfig(min_cleanable_dirty_ratio=0.0,
                                                         delete_retention_ms=0))
    plog.close()
"""

CRASH_CONFIG = LogConfig(segment_bytes=4_000, index_interval_bytes=500, retention_ms=-1,
                         segment_ms=DAY)


def _check_after_crash(directory: Path, latest: Latest, deleted: set[bytes]) -> None:
    first = _open(directory, CRASH_CONFIG)
    seen = _visible(first)
    records = _read_all(first)
    first.close()
    for key, (offset, value) in latest.items():
        if key in deleted:
            assert key not in seen or seen[key] == (offset, None), key
        else:
            assert seen[key] == (offset, value), key
    assert set(seen) <= set(latest)
    second = _open(directory, CRASH_CONFIG)
    assert _read_all(second) == records
    second.close()


def test_sigkill_at_any_moment_loses_no_latest_value(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    rng = random.Random(9)
    latest: Latest = {}
    deleted: set[bytes] = set()
    plog = _open(directory, CRASH_CONFIG)
    _produce(plog, _versions(rng, 150, 4), latest=latest)
    _roll(plog)
    plog.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(directory)], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        _check_after_crash(directory, latest, deleted)
        # More versions and some deletions for the next round's child to compact.
        plog = _open(directory, CRASH_CONFIG)
        keys = rng.sample(sorted(latest), 40)
        pairs: list[tuple[bytes | None, bytes | None]] = [
            (k, None if i % 4 == 0 else f"round value {rng.random()}".encode())
            for i, k in enumerate(keys)
        ]
        _produce(plog, pairs, latest=latest)
        deleted -= {k for k, v in pairs if v is not None}
        deleted |= {k for k, v in pairs if v is None and k is not None}
        _roll(plog)
        plog.close()
    (directory / CLEANER_CHECKPOINT).unlink(missing_ok=True)
    plog = _open(directory, CRASH_CONFIG)
    assert compact_now(plog, NOW, CompactionConfig(min_cleanable_dirty_ratio=0.0,
                                                   delete_retention_ms=0))
    plog.close()
    _check_after_crash(directory, latest, deleted)


@pytest.mark.parametrize("kill_after", ["cleaned", "swap", "manifest", "group"])
def test_recovery_of_each_swap_step(tmp_path: Path, kill_after: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic crash points inside the switch-over (the random test may miss them)."""
    import broker._compaction as compaction

    directory = tmp_path / "p"
    latest: Latest = {}
    plog = _open(directory, CRASH_CONFIG)
    _produce(plog, _versions(random.Random(10), 100, 4), latest=latest)
    _roll(plog)

    class Crash(Exception):
        pass

    real_write, real_rename = write_checkpoint, Path.rename
    renames: list[str] = []

    def write(path: Path, text: str, *, durable: bool = True) -> None:
        real_write(path, text, durable=durable)
        if kill_after == "manifest" and path.name == compaction.SWAP_MANIFEST:
            raise Crash

    def rename(self: Path, target: Path) -> Path:
        if kill_after == "swap" and self.name.endswith(".cleaned") and len(renames) == 4:
            raise Crash
        if kill_after == "group" and self.name.endswith(".log.swap") and renames and \
                any(r.endswith(".log.swap") for r in renames):
            raise Crash
        renames.append(self.name)
        return real_rename(self, target)

    monkeypatch.setattr(compaction, "write_checkpoint", write)
    monkeypatch.setattr(Path, "rename", rename)
    plan = plog.compaction_plan(NOW, EAGER)
    assert plan is not None
    result = run_compaction(plan)
    if kill_after != "cleaned":
        with pytest.raises(Crash):
            plog.finish_compaction(result)
    monkeypatch.undo()
    # The process "dies" here: its files stay as they are, nothing is closed.
    _check_after_crash(directory, latest, set())
    leftovers = [p.name for p in directory.iterdir() if p.suffix in (".cleaned", ".swap")]
    assert not leftovers and not (directory / compaction.SWAP_MANIFEST).exists()


# -- what real consumers make of a compacted log ---------------------------------------------


def test_real_consumers_read_a_compacted_log_with_gaps_and_header_only_batches(
        tmp_path: Path) -> None:
    """Compact a partition a real broker wrote (offline), restart it, consume with
    librdkafka and kafka-python: latest values only, gaps and empty batches stepped over."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    from tests.broker.test_clients import create_topic
    from tests.conftest import BrokerProcess

    broker = BrokerProcess(tmp_path / "data").start()
    try:
        create_topic(broker.bootstrap, "device-state",
                     config={"cleanup.policy": "compact", "segment.bytes": "3000"})
        latest: dict[bytes, bytes | None] = {}
        for round_ in range(6):  # one idempotent producer per round: its batches empty out
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                                 "enable.idempotence": True, "compression.type": "zstd"})
            for i in range(60):
                key = f"dev-{i % 20}".encode()
                value = None if (round_ == 5 and i % 20 == 7) else f"r{round_} i{i}".encode()
                producer.produce("device-state", key=key, value=value)
                latest[key] = value
                if i % 10 == 9:
                    producer.flush(10)
            assert producer.flush(10) == 0
        broker.stop()
        directory = tmp_path / "data" / "logs" / "device-state-0"
        config = LogConfig(segment_bytes=3000, retention_ms=-1, segment_ms=DAY)
        plog = PartitionLog.open(directory, config)
        plog.roll_and_retain(int(time.time() * 1000) + 2 * DAY)
        end = plog.log_end_offset
        plog.high_watermark = end
        assert compact_now(plog, int(time.time() * 1000) + 1000, EAGER)
        headers = [h for h, _ in decode_batches(
            b"".join(p.read_bytes() for p in sorted(directory.glob("*.log"))))]
        assert any(h.record_count == 0 for h in headers)  # a producer's last batch, emptied
        plog.close()
        broker.start()

        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition("device-state", 0, 0)])
        got: dict[bytes, bytes | None] = {}
        offsets: list[int] = []
        deadline = time.monotonic() + 20
        while (not offsets or offsets[-1] < end - 1) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            mkey, offset = msg.key(), msg.offset()
            assert mkey is not None and offset is not None
            got[mkey] = msg.value()
            offsets.append(offset)
        consumer.close()
        assert got == latest and len(offsets) == len(latest)
        assert offsets == sorted(offsets) and offsets[-1] == end - 1

        kconsumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                  consumer_timeout_ms=10_000)
        kconsumer.assign([KTP("device-state", 0)])
        kconsumer.seek_to_beginning()
        seen: dict[bytes, bytes | None] = {}
        for m in kconsumer:
            seen[m.key] = m.value
            if m.offset == end - 1:
                break
        kconsumer.close()
        assert seen == latest
    finally:
        broker.stop()
