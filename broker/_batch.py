"""Kafka v2 record batch headers: parsing, validation and offset rewriting (no I/O).

A batch is stored exactly as the producer sent it. The broker only rewrites the
baseOffset (bytes 0-8) and partitionLeaderEpoch (bytes 12-16), both outside the CRC,
so the stored checksum stays valid. Records are never decompressed.

Layout (big-endian), offsets in bytes from the batch start::

    0 baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32
    16 magic int8 | 17 crc uint32 (CRC-32C of bytes 21..end) | 21 attributes int16
    23 lastOffsetDelta int32 | 27 baseTimestamp int64 | 35 maxTimestamp int64
    43 producerId int64 | 51 producerEpoch int16 | 53 baseSequence int32
    57 recordsCount int32 | 61 records...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import google_crc32c

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "CorruptRecordError",
    "InvalidRecordError",
    "StorageError",
    "parse_batches",
    "rewrite_batch",
    "scan_valid_prefix",
    "whole_batches_length",
]

HEADER_SIZE = 61
"""Bytes of a v2 batch header, up to and including recordsCount."""
LOG_OVERHEAD = 12
"""baseOffset + batchLength: the bytes not counted by batchLength."""
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49
_CRC_START = 21

_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")
_OFFSET = struct.Struct(">q")
_EPOCH = struct.Struct(">i")

Buffer = bytes | bytearray | memoryview


class StorageError(Exception):
    """Base of every error the log storage raises."""


class CorruptRecordError(StorageError):
    """A batch failed its CRC, is cut short, or has an impossible length.

    `truncated` is True when the buffer simply ends before the batch does (a torn
    tail), as opposed to bytes that are present but wrong.
    """

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


class InvalidRecordError(StorageError):
    """A batch is well-formed but not something this log accepts (e.g. magic != 2)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 61-byte header of one v2 record batch, plus where it sits."""

    position: int
    size: int
    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        """0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd."""
        return self.attributes & 0x07

    @property
    def timestamp_type(self) -> int:
        """0 CreateTime, 1 LogAppendTime."""
        return (self.attributes >> 3) & 0x01

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & 0x10)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & 0x20)


def _walk(
    buf: Buffer, *, verify_crc: bool, origin: int = 0
) -> tuple[list[BatchHeader], int, StorageError | None]:
    """Parse whole batches from the start of `buf`.

    Returns the headers parsed, the byte length they cover, and the error that
    stopped the walk (None when the buffer ended exactly on a batch boundary).
    Header positions are relative to `buf` plus `origin`.
    """
    headers: list[BatchHeader] = []
    end = len(buf)
    pos = 0
    unpack = _HEADER.unpack_from
    while pos < end:
        at = origin + pos
        remaining = end - pos
        if remaining < LOG_OVERHEAD:
            return headers, pos, CorruptRecordError(
                f"batch at byte {at}: truncated, only {remaining} bytes left", truncated=True
            )
        base_offset, batch_length = _PREFIX.unpack_from(buf, pos)
        if batch_length < _MIN_BATCH_LENGTH:
            return headers, pos, CorruptRecordError(
                f"batch at byte {at}: batchLength {batch_length} is below the minimum "
                f"{_MIN_BATCH_LENGTH}"
            )
        size = LOG_OVERHEAD + batch_length
        if size > remaining:
            return headers, pos, CorruptRecordError(
                f"batch at byte {at}: truncated, needs {size} bytes, only {remaining} left",
                truncated=True,
            )
        fields = unpack(buf, pos)
        magic = fields[3]
        if magic != 2:
            return headers, pos, InvalidRecordError(
                f"batch at byte {at}: unsupported magic {magic} (only v2 batches are stored)"
            )
        if verify_crc:
            computed = google_crc32c.value(bytes(buf[pos + _CRC_START : pos + size]))
            if computed != fields[4]:
                return headers, pos, CorruptRecordError(
                    f"batch at byte {at}: CRC32C mismatch "
                    f"(stored 0x{fields[4]:08x}, computed 0x{computed:08x})"
                )
        if fields[6] < 0:
            return headers, pos, InvalidRecordError(
                f"batch at byte {at}: negative lastOffsetDelta {fields[6]}"
            )
        if fields[12] < 0:
            return headers, pos, InvalidRecordError(
                f"batch at byte {at}: negative recordsCount {fields[12]}"
            )
        headers.append(BatchHeader(at, size, base_offset, *fields[2:]))
        pos += size
    return headers, pos, None


def parse_batches(buf: Buffer, *, verify_crc: bool) -> list[BatchHeader]:
    """Parse every batch in a Records blob, raising on the first bad one.

    Raises CorruptRecordError (CRC mismatch, truncated batch, impossible batchLength)
    or InvalidRecordError (magic != 2, negative lastOffsetDelta or recordsCount).
    A recordsCount different from lastOffsetDelta + 1 is allowed (compacted data).
    """
    headers, _, error = _walk(buf, verify_crc=verify_crc)
    if error is not None:
        raise error
    return headers


def scan_valid_prefix(buf: Buffer) -> tuple[list[BatchHeader], int]:
    """The longest prefix of `buf` made of whole, CRC-valid batches: (headers, length).

    Used by recovery: it stops, without raising, at the first torn or corrupt batch.
    """
    headers, length, _ = _walk(buf, verify_crc=True)
    return headers, length


def rewrite_batch(buf: bytearray, position: int, base_offset: int, leader_epoch: int) -> None:
    """Set the baseOffset and partitionLeaderEpoch of the batch at `position` in place."""
    _OFFSET.pack_into(buf, position, base_offset)
    _EPOCH.pack_into(buf, position + 12, leader_epoch)


def whole_batches_length(buf: Buffer, max_offset: int) -> int:
    """Byte length of the leading whole batches in `buf` whose last offset is < max_offset.

    A light walk for reads of already validated data: no header objects, no CRC.
    """
    pos = 0
    end = len(buf)
    prefix = _PREFIX.unpack_from
    delta_at = _EPOCH.unpack_from
    while end - pos >= 27:
        base, length = prefix(buf, pos)
        size = LOG_OVERHEAD + length
        if length < _MIN_BATCH_LENGTH or pos + size > end:
            break
        if base + delta_at(buf, pos + 23)[0] >= max_offset:
            break
        pos += size
    return pos
