"""Parsing and rewriting Kafka v2 record batch headers."""

from __future__ import annotations

import struct

import pytest

from broker._batch import (
    CorruptRecordError,
    InvalidRecordError,
    StorageError,
    parse_batches,
    rewrite_batch,
    scan_valid_prefix,
    whole_batches_length,
)
from tests.broker.records import decode_records, make_batch


def test_parses_every_header_field() -> None:
    batch = make_batch([b"a", b"b", b"c"], timestamps=[100, 300, 200], producer_id=7,
                       producer_epoch=2, base_sequence=40, attributes=0x10, base_offset=5)
    [h] = parse_batches(batch, verify_crc=True)
    assert (h.position, h.size, h.base_offset, h.last_offset) == (0, len(batch), 5, 7)
    assert (h.magic, h.record_count, h.last_offset_delta) == (2, 3, 2)
    assert (h.base_timestamp, h.max_timestamp) == (100, 300)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 2, 40)
    assert h.is_transactional and not h.is_control
    assert h.compression == 0 and h.timestamp_type == 0


def test_attribute_bits() -> None:
    [h] = parse_batches(make_batch([b"x"], attributes=0x2C), verify_crc=True)
    assert h.compression == 4 and h.timestamp_type == 1 and h.is_control
    assert not h.is_transactional


def test_walks_several_batches_with_positions() -> None:
    a, b = make_batch([b"one"]), make_batch([b"two", b"three"])
    headers = parse_batches(a + b, verify_crc=True)
    assert [h.position for h in headers] == [0, len(a)]
    assert parse_batches(b"", verify_crc=True) == []
    assert parse_batches(memoryview(a + b), verify_crc=True)[1].record_count == 2


def test_crc_mismatch_says_where_and_what() -> None:
    batch = bytearray(make_batch([b"hello"]))
    batch[-2] ^= 0xFF
    with pytest.raises(CorruptRecordError, match=r"batch at byte 0: CRC32C mismatch \(stored 0x"):
        parse_batches(batch, verify_crc=True)
    assert parse_batches(batch, verify_crc=False)[0].record_count == 1


def test_truncated_batch_is_corrupt() -> None:
    batch = make_batch([b"hello"])
    with pytest.raises(CorruptRecordError, match="truncated") as info:
        parse_batches(batch + batch[:30], verify_crc=True)
    assert info.value.truncated
    with pytest.raises(CorruptRecordError, match="truncated"):
        parse_batches(batch[:8], verify_crc=False)


@pytest.mark.parametrize("length", [-1, 0, 48])
def test_impossible_batch_length_is_corrupt(length: int) -> None:
    batch = bytearray(make_batch([b"hello"]))
    struct.pack_into(">i", batch, 8, length)
    with pytest.raises(CorruptRecordError, match="batchLength"):
        parse_batches(batch, verify_crc=True)


def test_old_magic_is_invalid() -> None:
    batch = bytearray(make_batch([b"hello"]))
    batch[16] = 1
    with pytest.raises(InvalidRecordError, match="magic 1"):
        parse_batches(batch, verify_crc=True)


def test_negative_counts_are_invalid_but_count_mismatch_is_allowed() -> None:
    neg = _with_fields(make_batch([b"a"]), records_count=-1)
    with pytest.raises(InvalidRecordError, match="recordsCount"):
        parse_batches(neg, verify_crc=True)
    neg_delta = _with_fields(make_batch([b"a"]), last_offset_delta=-3)
    with pytest.raises(InvalidRecordError, match="lastOffsetDelta"):
        parse_batches(neg_delta, verify_crc=True)
    compacted = _with_fields(make_batch([b"a", b"b"]), last_offset_delta=9)
    assert parse_batches(compacted, verify_crc=True)[0].last_offset == 9


def test_errors_share_a_base() -> None:
    assert issubclass(CorruptRecordError, StorageError)
    assert issubclass(InvalidRecordError, StorageError)


def test_scan_valid_prefix_stops_at_first_bad_batch() -> None:
    a, b, c = make_batch([b"1"]), make_batch([b"2"]), make_batch([b"3"])
    bad = bytearray(b)
    bad[-1] ^= 1
    headers, length = scan_valid_prefix(a + bytes(bad) + c)
    assert len(headers) == 1 and length == len(a)
    headers, length = scan_valid_prefix(a + b + c[:20])
    assert len(headers) == 2 and length == len(a) + len(b)
    assert scan_valid_prefix(a + b"\x00" * 100) == (parse_batches(a, verify_crc=True), len(a))


def test_rewrite_keeps_crc_valid_and_records_intact() -> None:
    buf = bytearray(make_batch([b"k", b"v"], keys=[b"key", None]))
    rewrite_batch(buf, 0, 1234, 7)
    [h] = parse_batches(buf, verify_crc=True)
    assert (h.base_offset, h.partition_leader_epoch) == (1234, 7)
    decoded = [(o, k, v) for o, k, v, _ in decode_records(bytes(buf))]
    assert decoded == [(1234, b"key", b"k"), (1235, None, b"v")]


def test_whole_batches_length_respects_limit_and_torn_tail() -> None:
    a, b = bytearray(make_batch([b"1"])), bytearray(make_batch([b"2", b"3"]))
    rewrite_batch(b, 0, 1, 0)
    blob = bytes(a + b)
    assert whole_batches_length(blob, 10) == len(blob)
    assert whole_batches_length(blob, 2) == len(a)  # batch 1..2 straddles the limit
    assert whole_batches_length(blob[:-1], 10) == len(a)


def _with_fields(batch: bytes, *, records_count: int | None = None,
                 last_offset_delta: int | None = None) -> bytes:
    """Change header fields and recompute the CRC so only the change is wrong."""
    import google_crc32c

    buf = bytearray(batch)
    if records_count is not None:
        struct.pack_into(">i", buf, 57, records_count)
    if last_offset_delta is not None:
        struct.pack_into(">i", buf, 23, last_offset_delta)
    struct.pack_into(">I", buf, 17, google_crc32c.value(bytes(buf[21:])))
    return bytes(buf)
