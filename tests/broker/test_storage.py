"""PartitionLog on real files: append, read, roll, retain, recover, idempotence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker._batch import parse_batches
from broker._storage import (
    CorruptRecordError,
    InvalidProducerEpochError,
    InvalidRecordError,
    LogConfig,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionLog,
    RecordTooLargeError,
    StorageError,
)
from tests.broker.records import batch_of_size, decode_records, make_batch

NOW = 1_700_000_000_000
SMALL = LogConfig(segment_bytes=10_000, index_interval_bytes=500)


def _open(path: Path, config: LogConfig = SMALL) -> PartitionLog:
    return PartitionLog.open(path, config)


def _joined(log: PartitionLog, offset: int, max_bytes: int = 1 << 30, **kw: int) -> bytes:
    return b"".join(bytes(c) for c in log.read(offset, max_bytes, **kw).chunks)


def _values(blob: bytes) -> list[bytes]:
    return [v for _, _, v, _ in decode_records(blob)]


def _fill(log: PartitionLog, n: int, size: int = 200, start_ts: int = NOW) -> None:
    for i in range(n):
        log.append(batch_of_size(size, timestamp=start_ts + i), leader_epoch=0, now_ms=NOW)


def test_append_assigns_offsets_and_reads_back_byte_exact(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    a = make_batch([b"a", b"b", b"c"], timestamp=NOW)
    b = make_batch([b"d"], timestamp=NOW + 1)
    r1 = log.append(a, leader_epoch=3, now_ms=NOW)
    r2 = log.append(b, leader_epoch=3, now_ms=NOW)
    assert (r1.base_offset, r1.last_offset, r1.record_count, r1.bytes) == (0, 2, 3, len(a))
    assert (r2.base_offset, r2.last_offset, r2.log_append_time, r2.duplicate) == (3, 3, -1, False)
    assert log.log_end_offset == 4
    blob = _joined(log, 0)
    assert len(blob) == len(a) + len(b)
    # Only baseOffset (0-8) and partitionLeaderEpoch (12-16) differ from what was sent.
    assert blob[8:12] == a[8:12] and blob[16 : len(a)] == a[16:]
    assert blob[len(a) + 16 :] == b[16:]
    headers = parse_batches(blob, verify_crc=True)
    assert [(h.base_offset, h.partition_leader_epoch) for h in headers] == [(0, 3), (3, 3)]
    assert [o for o, *_ in decode_records(blob)] == [0, 1, 2, 3]


def test_reads_come_from_disk_after_reopen(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    _fill(log, 50)
    before = _joined(log, 0)
    log.close()
    log = _open(tmp_path / "p0")
    assert log.log_end_offset == 50 and _joined(log, 0) == before
    assert _joined(log, 17) == before[17 * 200 :]


def test_read_from_middle_of_batch_returns_containing_batch(tmp_path: Path) -> None:
    for tail_cache in (8 << 20, 0):
        log = _open(tmp_path / f"p{tail_cache}", LogConfig(tail_cache_bytes=tail_cache))
        log.append(make_batch([b"0", b"1", b"2"]), leader_epoch=0, now_ms=NOW)
        log.append(make_batch([b"3", b"4"]), leader_epoch=0, now_ms=NOW)
        assert _values(_joined(log, 1)) == [b"0", b"1", b"2", b"3", b"4"]
        assert _values(_joined(log, 4)) == [b"3", b"4"]
        assert log.read(5, 1000).chunks == []


def test_max_bytes_and_max_offset_but_always_one_batch(tmp_path: Path) -> None:
    for tail_cache in (8 << 20, 0):
        log = _open(tmp_path / f"p{tail_cache}", LogConfig(tail_cache_bytes=tail_cache))
        _fill(log, 10, size=100)
        assert log.read(0, 350).size == 300
        assert log.read(0, 10).size == 100  # KIP-74: one whole batch even if too big
        assert log.read(2, 1000, max_offset=5).size == 300
        assert log.read(5, 1000, max_offset=5).size == 0
        assert log.read(0, 1 << 20).size == 1000
        res = log.read(3, 1 << 20)
        assert (res.log_start_offset, res.log_end_offset) == (0, 10)


def test_batch_straddling_high_watermark_is_not_returned(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    log.append(make_batch([b"a"]), leader_epoch=0, now_ms=NOW)
    log.append(make_batch([b"b", b"c"]), leader_epoch=0, now_ms=NOW)
    assert _values(_joined(log, 0, max_offset=2)) == [b"a"]


def test_offsets_out_of_range(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    _fill(log, 3)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    assert log.read(3, 100).size == 0


def test_segments_roll_by_size_and_reads_span_them(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0", LogConfig(segment_bytes=1000, index_interval_bytes=150,
                                           tail_cache_bytes=0))
    _fill(log, 23, size=200)
    assert log.segment_count == 5  # 5 batches per 1000-byte segment
    assert sorted(p.name for p in (tmp_path / "p0").glob("*.log"))[1] == "00000000000000000005.log"
    assert _values(_joined(log, 3))[0].startswith(b"x")
    assert log.read(3, 1 << 20).size == 20 * 200
    assert log.read(4, 450).size == 400  # crosses from segment 0 into segment 1
    assert log.read(20, 1 << 20).size == 600


def test_segment_rolls_by_age(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0", LogConfig(segment_ms=1000))
    log.append(make_batch([b"a"], timestamp=NOW), leader_epoch=0, now_ms=NOW)
    log.append(make_batch([b"b"], timestamp=NOW), leader_epoch=0, now_ms=NOW + 999)
    assert log.segment_count == 1
    log.append(make_batch([b"c"], timestamp=NOW), leader_epoch=0, now_ms=NOW + 1000)
    assert log.segment_count == 2
    assert log.roll_and_retain(NOW + 1500) == 0 and log.segment_count == 2
    log.roll_and_retain(NOW + 2000)
    assert log.segment_count == 3
    assert _values(_joined(log, 0)) == [b"a", b"b", b"c"]


def test_retention_by_bytes_advances_log_start(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1000, retention_bytes=2500, retention_ms=-1)
    log = _open(tmp_path / "p0", config)
    _fill(log, 30, size=200)  # 6 segments of 1000 bytes
    deleted = log.roll_and_retain(NOW)
    assert deleted == 3000 and log.size_bytes == 3000 and log.log_start_offset == 15
    with pytest.raises(OffsetOutOfRangeError):
        log.read(14, 100)
    assert log.read(15, 200).size == 200
    log.close()
    assert _open(tmp_path / "p0", config).log_start_offset == 15


def test_retention_by_time_uses_largest_timestamp_and_keeps_active(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1000, retention_ms=10_000)
    log = _open(tmp_path / "p0", config)
    _fill(log, 10, size=200, start_ts=NOW)  # segment 0: ts NOW..NOW+4, segment 1: NOW+5..
    _fill(log, 2, size=200, start_ts=NOW + 100_000)
    assert log.segment_count == 3
    assert log.roll_and_retain(NOW + 10_004) == 0
    assert log.roll_and_retain(NOW + 10_005) == 1000 and log.log_start_offset == 5
    assert log.roll_and_retain(NOW + 99_999) == 1000 and log.log_start_offset == 10
    assert log.roll_and_retain(NOW + 500_000) == 0  # the active segment stays
    assert log.segment_count == 1 and log.log_end_offset == 12


def test_corrupt_or_invalid_batches_are_rejected_and_nothing_appended(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0", LogConfig(max_message_bytes=500))
    good = make_batch([b"ok"])
    bad = bytearray(make_batch([b"bad"]))
    bad[-1] ^= 0x55
    with pytest.raises(CorruptRecordError, match="CRC32C mismatch"):
        log.append(good + bytes(bad), leader_epoch=0, now_ms=NOW)
    old = bytearray(good)
    old[16] = 1
    with pytest.raises(InvalidRecordError, match="magic"):
        log.append(bytes(old), leader_epoch=0, now_ms=NOW)
    with pytest.raises(RecordTooLargeError, match=r"max\.message\.bytes"):
        log.append(batch_of_size(600), leader_epoch=0, now_ms=NOW)
    with pytest.raises(InvalidRecordError):
        log.append(b"", leader_epoch=0, now_ms=NOW)
    assert log.log_end_offset == 0 and log.size_bytes == 0
    assert log.append(good, leader_epoch=0, now_ms=NOW).base_offset == 0


def _crash(log: PartitionLog) -> None:
    """Simulate SIGKILL: let go of the files without any of close()'s work (the page
    cache keeps what os.write wrote; nothing buffered in the process survives)."""
    for seg in log._segments:
        for fd in (seg._fd, seg._idx_fd, seg._tidx_fd):
            os.close(fd)


def test_torn_tail_recovers_exactly_the_valid_prefix(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d, LogConfig(index_interval_bytes=1000))
    _fill(log, 100, size=300)
    expected = _joined(log, 0)
    _crash(log)
    seg = d / "00000000000000000000.log"
    with open(seg, "r+b") as f:
        f.truncate(100 * 300 - 123)  # chop the last batch mid-way
    log = _open(d, LogConfig(index_interval_bytes=1000))
    assert log.log_end_offset == 99
    assert _joined(log, 0) == expected[: 99 * 300]
    assert _joined(log, 57) == expected[57 * 300 : 99 * 300]
    index = (d / "00000000000000000000.index").read_bytes()
    assert len(index) % 8 == 0 and len(index) // 8 == 24  # an entry every 4 batches (1200 B)
    assert log.append(make_batch([b"next"]), leader_epoch=0, now_ms=NOW).base_offset == 99


def test_garbage_after_valid_batches_is_dropped_and_later_segments_deleted(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(segment_bytes=3000)
    log = _open(d, config)
    _fill(log, 30, size=300)  # 3 segments
    _crash(log)
    first = d / "00000000000000000000.log"
    data = bytearray(first.read_bytes())
    data[5 * 300 + 40] ^= 0xFF  # corrupt batch 5 in the first segment
    first.write_bytes(bytes(data))
    log = _open(d, config)
    assert log.log_end_offset == 5 and log.segment_count == 1
    assert not (d / "00000000000000000010.log").exists()


def test_appended_garbage_is_dropped(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d)
    _fill(log, 10)
    _crash(log)
    with open(d / "00000000000000000000.log", "ab") as f:
        f.write(os.urandom(777))
    log = _open(d)
    assert log.log_end_offset == 10 and log.size_bytes == 2000


def test_flushed_prefix_is_not_rescanned_but_tail_is(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(segment_bytes=2000)
    log = _open(d, config)
    _fill(log, 20, size=200)
    log.flush()
    assert log.recovery_point == 20 and log.unflushed_bytes == 0
    _fill(log, 5, size=200)
    assert log.unflushed_bytes == 1000 and log.unflushed_messages == 5
    _crash(log)
    tail = d / "00000000000000000020.log"
    with open(tail, "r+b") as f:
        f.truncate(4 * 200 + 10)
    log = _open(d, config)
    assert log.log_end_offset == 24 and log.recovery_point == 20


def test_missing_or_corrupt_index_files_are_rebuilt(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(index_interval_bytes=1000, tail_cache_bytes=0)
    log = _open(d, config)
    _fill(log, 50, size=300)
    log.flush()  # index entries reach the files at flush (and roll, and close)
    index = (d / "00000000000000000000.index").read_bytes()
    tindex = (d / "00000000000000000000.timeindex").read_bytes()
    expected = _joined(log, 33)
    log.close()
    (d / "00000000000000000000.index").unlink()
    log = _open(d, config)
    assert (d / "00000000000000000000.index").read_bytes() == index
    assert _joined(log, 33) == expected
    log.close()
    with open(d / "00000000000000000000.index", "ab") as f:
        f.write(b"\x01\x02\x03")  # not a multiple of 8
    with open(d / "00000000000000000000.timeindex", "wb") as f:
        f.write(b"\x00" * 12 * 3 + b"\x00\x00\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff")
    log = _open(d, config)
    assert (d / "00000000000000000000.index").read_bytes() == index
    assert (d / "00000000000000000000.timeindex").read_bytes() == tindex
    assert _joined(log, 33) == expected and log.offset_for_timestamp(NOW + 40) == (40, NOW + 40)


def test_offset_for_timestamp_and_max_timestamp(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0", LogConfig(segment_bytes=2000, index_interval_bytes=300))
    for i in range(30):
        ts = NOW + 10 * i if i != 7 else NOW + 1_000_000
        log.append(batch_of_size(200, timestamp=ts), leader_epoch=0, now_ms=NOW)
    assert log.offset_for_timestamp(NOW) == (0, NOW)
    assert log.offset_for_timestamp(NOW + 15) == (2, NOW + 20)
    assert log.offset_for_timestamp(NOW + 200) == (7, NOW + 1_000_000)  # ts not monotonic
    assert log.offset_for_timestamp(NOW + 2_000_000) is None
    assert log.max_timestamp() == (7, NOW + 1_000_000)
    log.close()
    log = _open(tmp_path / "p0", LogConfig(segment_bytes=2000, index_interval_bytes=300))
    assert log.offset_for_timestamp(NOW + 15) == (2, NOW + 20)
    assert log.max_timestamp() == (7, NOW + 1_000_000)
    log.delete_records_before(log.high_watermark)  # hw starts at 0 after reopen
    log.high_watermark = 30
    log.delete_records_before(12)
    assert log.offset_for_timestamp(NOW) == (12, NOW + 120)


def test_empty_log_answers(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    assert log.offset_for_timestamp(0) is None and log.max_timestamp() is None
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
    assert log.read(0, 100).size == 0


def _idem(seq: int, n: int = 1, *, pid: int = 42, epoch: int = 0) -> bytes:
    return make_batch([b"v%d" % (seq + i) for i in range(n)], producer_id=pid,
                      producer_epoch=epoch, base_sequence=seq)


def test_duplicate_batch_returns_original_offsets_without_appending(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    log.append(make_batch([b"plain"]), leader_epoch=0, now_ms=NOW)
    first = log.append(_idem(0, 3), leader_epoch=0, now_ms=NOW)
    log.append(_idem(3, 2), leader_epoch=0, now_ms=NOW)
    again = log.append(_idem(0, 3), leader_epoch=0, now_ms=NOW)
    assert again.duplicate and (again.base_offset, again.last_offset) == (1, 3)
    assert (first.base_offset, first.last_offset) == (1, 3)
    assert log.log_end_offset == 6
    entry = log.producer_state(42)
    assert entry is not None and entry.epoch == 0 and entry.last_seq == 4


def test_out_of_order_sequence_and_fenced_epoch(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    with pytest.raises(OutOfOrderSequenceError, match="sequence 0"):
        log.append(_idem(5), leader_epoch=0, now_ms=NOW)
    log.append(_idem(0, 2, epoch=1), leader_epoch=0, now_ms=NOW)
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 2, got 3"):
        log.append(_idem(3, epoch=1), leader_epoch=0, now_ms=NOW)
    with pytest.raises(InvalidProducerEpochError, match="epoch 0 is older"):
        log.append(_idem(2, epoch=0), leader_epoch=0, now_ms=NOW)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(_idem(2, epoch=2), leader_epoch=0, now_ms=NOW)  # new epoch must start at 0
    assert log.log_end_offset == 2
    log.append(_idem(0, epoch=2), leader_epoch=0, now_ms=NOW)  # bump resets the sequence
    with pytest.raises(InvalidProducerEpochError):
        log.append(_idem(2, epoch=1), leader_epoch=0, now_ms=NOW)
    assert log.log_end_offset == 3


def test_sequence_wraps_after_int32_max(tmp_path: Path) -> None:
    log = _open(tmp_path / "p0")
    log.append(_idem(0), leader_epoch=0, now_ms=NOW)
    entry = log._producers.get(42)
    assert entry is not None
    # Pretend the producer already sent 2**31 - 2 records.
    from broker._producer_state import BatchMetadata
    entry.batches[-1] = BatchMetadata(0, 2**31 - 3, 0, 0, NOW)
    log.append(_idem(2**31 - 2, 2), leader_epoch=0, now_ms=NOW)  # ends at 2**31 - 1
    assert log.append(_idem(0), leader_epoch=0, now_ms=NOW).base_offset == 3


def test_producer_state_survives_clean_and_unclean_restart(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d)
    log.append(_idem(0, 2), leader_epoch=0, now_ms=NOW)
    log.append(_idem(2, 2), leader_epoch=0, now_ms=NOW)
    log.close()
    log = _open(d)
    assert log.append(_idem(2, 2), leader_epoch=0, now_ms=NOW).duplicate
    log.append(_idem(4, 1), leader_epoch=0, now_ms=NOW)
    _crash(log)
    for snap in d.glob("*.snapshot"):
        snap.unlink()
    log = _open(d)
    dup = log.append(_idem(4, 1), leader_epoch=0, now_ms=NOW)
    assert dup.duplicate and dup.base_offset == 4
    with pytest.raises(OutOfOrderSequenceError):
        log.append(_idem(6), leader_epoch=0, now_ms=NOW)
    assert log.append(_idem(5), leader_epoch=0, now_ms=NOW).base_offset == 5


def test_producer_state_from_snapshot_plus_later_batches(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(segment_bytes=300)
    log = _open(d, config)
    for seq in range(12):  # rolls write snapshots
        log.append(_idem(seq), leader_epoch=0, now_ms=NOW)
    assert list(d.glob("*.snapshot"))
    _crash(log)
    log = _open(d, config)
    assert log.append(_idem(11), leader_epoch=0, now_ms=NOW).duplicate
    assert log.append(_idem(12), leader_epoch=0, now_ms=NOW).base_offset == 12


def test_truncate_to_drops_tail_and_fixes_state(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(segment_bytes=1000, index_interval_bytes=250)
    log = _open(d, config)
    for i in range(12):
        log.append(batch_of_size(200, timestamp=NOW + i), leader_epoch=1 if i < 6 else 2,
                   now_ms=NOW)
    log.append(_idem(0, 2), leader_epoch=3, now_ms=NOW)  # offsets 12-13
    log.high_watermark = log.log_end_offset
    assert log.epochs.entries == [(1, 0), (2, 6), (3, 12)]
    log.truncate_to(13)  # mid-batch: the whole batch goes
    assert log.log_end_offset == 12 and log.high_watermark == 12
    assert log.producer_state(42) is None
    assert log.epochs.entries == [(1, 0), (2, 6)]
    log.truncate_to(7)
    assert log.log_end_offset == 7 and log.segment_count == 2
    assert log.max_timestamp() == (6, NOW + 6)
    assert log.read(0, 1 << 20).size == 7 * 200
    assert log.append(make_batch([b"new"]), leader_epoch=4, now_ms=NOW).base_offset == 7
    log.close()
    log = _open(d, config)
    assert log.log_end_offset == 8 and log.epochs.entries == [(1, 0), (2, 6), (4, 7)]
    assert _values(_joined(log, 7)) == [b"new"]


def test_epoch_cache_persists_and_answers_end_offsets(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d)
    for epoch, n in ((0, 3), (2, 4), (5, 2)):
        for _ in range(n):
            log.append(make_batch([b"x"]), leader_epoch=epoch, now_ms=NOW)
    text = (d / "leader-epoch-checkpoint").read_text()
    assert text == "0\n3\n0 0\n2 3\n5 7\n"
    log.close()
    log = _open(d)
    assert log.epochs.latest_epoch == 5
    assert log.end_offset_for_epoch(5) == (5, 9)
    assert log.end_offset_for_epoch(2) == (2, 7)
    assert log.end_offset_for_epoch(3) == (2, 7)  # unknown epoch in between: the one below
    assert log.end_offset_for_epoch(0) == (0, 3)
    assert log.end_offset_for_epoch(6) == (-1, -1)


def test_append_replica_keeps_offsets_and_epochs(tmp_path: Path) -> None:
    leader = _open(tmp_path / "leader")
    leader.append(make_batch([b"a", b"b"]), leader_epoch=1, now_ms=NOW)
    leader.append(_idem(0), leader_epoch=1, now_ms=NOW)
    leader.append(make_batch([b"c"]), leader_epoch=4, now_ms=NOW)
    fetched = _joined(leader, 0)
    follower = _open(tmp_path / "follower")
    with pytest.raises(StorageError, match="log end is 0"):
        follower.append_replica(fetched[len(make_batch([b"a", b"b"])) :])
    follower.append_replica(fetched)
    assert follower.log_end_offset == 4 and _joined(follower, 0) == fetched
    assert follower.epochs.entries == [(1, 0), (4, 3)]
    assert follower.producer_state(42) is not None
    bad = bytearray(fetched)
    bad[-1] ^= 1
    with pytest.raises(CorruptRecordError):
        follower.append_replica(bytes(bad))


def test_delete_records_before_moves_log_start(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    config = LogConfig(segment_bytes=1000)
    log = _open(d, config)
    _fill(log, 12, size=200)
    log.high_watermark = 12
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(13)
    log.delete_records_before(7)
    assert log.log_start_offset == 7 and log.segment_count == 2
    with pytest.raises(OffsetOutOfRangeError):
        log.read(6, 100)
    assert log.read(7, 100).size == 200
    log.close()
    log = _open(d, config)
    assert log.log_start_offset == 7 and log.high_watermark == 12


def test_clean_close_marker_and_high_watermark_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d)
    _fill(log, 4)
    log.high_watermark = 3
    log.close()
    assert (d / ".clean-shutdown").exists()
    log = _open(d)
    assert not (d / ".clean-shutdown").exists()
    assert log.high_watermark == 3 and log.recovery_point == 4
    log.high_watermark = 99
    assert log.high_watermark == 4


def test_delete_removes_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "p0"
    log = _open(d)
    _fill(log, 3)
    log.delete()
    assert not d.exists()
