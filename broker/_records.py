"""Kafka v2 record batches record by record: encode and decode, with compression (no I/O).

The storage path never needs this (batches are stored as the producer sent them, see
`_batch`); the log cleaner does, to read keys and rebuild the batches it filters.

Record layout inside a batch (after the 61-byte header, compressed as a whole when the
batch's compression bits are set)::

    length varint | attributes int8 | timestampDelta varlong | offsetDelta varint
    keyLength varint | key | valueLength varint | value
    headerCount varint | (headerKeyLength varint | key utf-8 | headerValueLength varint | value)*

Varints are zigzag varints as in Protocol Buffers; a length of -1 is null.

Compression codes: 1 gzip, 2 snappy, 3 lz4 (LZ4 frame format), 4 zstd. Snappy comes in
two shapes: Java clients use the xerial framing (magic b"\\x82SNAPPY\\x00", then
big-endian int32 length-prefixed raw blocks), librdkafka and kafka-python may send one
raw snappy block. Both are decoded; raw snappy is encoded.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
import google_crc32c

from broker._batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    CorruptRecordError,
    InvalidRecordError,
    parse_batches,
)

__all__ = [
    "COMPRESSION_GZIP",
    "COMPRESSION_LZ4",
    "COMPRESSION_NONE",
    "COMPRESSION_SNAPPY",
    "COMPRESSION_ZSTD",
    "Record",
    "compress",
    "decode_batch",
    "decode_batches",
    "decode_records",
    "decompress",
    "encode_batch",
]

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, int32 version, int32 minimum compatible version
_INT32 = struct.Struct(">i")
_PREFIX = struct.Struct(">qiib")  # baseOffset, batchLength, partitionLeaderEpoch, magic
_AFTER_CRC = struct.Struct(">hiqqqhii")
_MAX_VARINT_BYTES = 10

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Record:
    """One record with its absolute offset and timestamp (ms)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    headers: tuple[tuple[str, bytes | None], ...] = ()


# -- varints -----------------------------------------------------------------------


def _write_varint(out: bytearray, value: int) -> None:
    zz = (value << 1) ^ (value >> 63)
    while zz > 0x7F:
        out.append((zz & 0x7F) | 0x80)
        zz >>= 7
    out.append(zz)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, new position); raises IndexError past the end, InvalidRecordError if overlong."""
    byte = buf[pos]
    if byte < 0x80:  # the common one-byte case
        return (byte >> 1) ^ -(byte & 1), pos + 1
    zz = byte & 0x7F
    shift = 7
    end = pos + _MAX_VARINT_BYTES
    pos += 1
    while True:
        if pos >= end:
            raise InvalidRecordError("varint longer than 10 bytes")
        byte = buf[pos]
        pos += 1
        zz |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (zz >> 1) ^ -(zz & 1), pos
        shift += 7


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


# -- compression ---------------------------------------------------------------------


def compress(codec: int, data: bytes) -> bytes:
    """`data` compressed the way Kafka clients expect for compression code `codec`."""
    if codec == COMPRESSION_NONE:
        return data
    if codec == COMPRESSION_GZIP:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if codec == COMPRESSION_SNAPPY:
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise InvalidRecordError(f"unknown compression code {codec}")


def decompress(codec: int, data: Buffer) -> bytes:
    """Inverse of `compress`, also accepting xerial-framed snappy and multi-member gzip.

    Raises CorruptRecordError when the data does not decompress.
    """
    if codec == COMPRESSION_NONE:
        return bytes(data)
    if not 1 <= codec <= 4:
        raise InvalidRecordError(f"unknown compression code {codec}")
    try:
        if codec == COMPRESSION_GZIP:
            return gzip.decompress(data)
        if codec == COMPRESSION_SNAPPY:
            if bytes(data[:8]) == _XERIAL_MAGIC:
                return _xerial_decompress(bytes(data))
            return bytes(cramjam.snappy.decompress_raw(bytes(data)))
        if codec == COMPRESSION_LZ4:
            return bytes(cramjam.lz4.decompress(bytes(data)))
        return bytes(cramjam.zstd.decompress(bytes(data)))
    except (OSError, EOFError, zlib.error, cramjam.DecompressionError, ValueError) as exc:
        raise CorruptRecordError(f"cannot decompress {_CODEC_NAMES[codec]} records: {exc}") from exc


_CODEC_NAMES = {0: "uncompressed", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def _xerial_decompress(data: bytes) -> bytes:
    if len(data) < _XERIAL_HEADER:
        raise ValueError("xerial snappy header cut short")
    out = bytearray()
    pos = _XERIAL_HEADER
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("xerial snappy block length cut short")
        (length,) = _INT32.unpack_from(data, pos)
        pos += 4
        if length < 0 or pos + length > len(data):
            raise ValueError(f"xerial snappy block of {length} bytes overruns the data")
        out += bytes(cramjam.snappy.decompress_raw(data[pos : pos + length]))
        pos += length
    return bytes(out)


# -- encoding ------------------------------------------------------------------------


def _encode_records(records: Sequence[Record], base_offset: int, base_ts: int) -> bytes:
    out = bytearray()
    body = bytearray()
    previous = base_offset - 1
    for r in records:
        delta = r.offset - base_offset
        if r.offset <= previous:
            raise ValueError(f"record offsets must increase from {base_offset}: got {r.offset} "
                             f"after {previous}")
        previous = r.offset
        body.clear()
        body.append(0)  # record attributes: unused
        _write_varint(body, r.timestamp - base_ts)
        _write_varint(body, delta)
        _write_bytes(body, r.key)
        _write_bytes(body, r.value)
        _write_varint(body, len(r.headers))
        for name, value in r.headers:
            _write_bytes(body, name.encode())
            _write_bytes(body, value)
        _write_varint(out, len(body))
        out += body
    return bytes(out)


def encode_batch(
    records: Sequence[Record],
    *,
    base_offset: int | None = None,
    compression: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    attributes_extra: int = 0,
    last_offset_delta: int | None = None,
    max_timestamp: int | None = None,
) -> bytes:
    """One v2 batch holding `records` (in increasing offset order), CRC32C included.

    base_offset defaults to the first record's offset; offset deltas are taken from the
    records' offsets, so gaps (as compaction leaves) are kept. The base timestamp is the
    first record's, the max timestamp the largest unless `max_timestamp` is given (a
    LogAppendTime batch keeps its append time). `last_offset_delta` keeps a filtered
    batch's original span (it must cover the last record). `attributes_extra` holds the
    attribute bits above the compression code (timestamp type, transactional, control).

    An empty `records` gives a header-only batch (what the cleaner keeps of an idempotent
    producer's last batch): it needs base_offset, is never compressed, and both its
    timestamps are `max_timestamp` (default -1).
    """
    if attributes_extra & 0x07:
        raise ValueError("attributes_extra must not carry compression bits; use compression=")
    if not 0 <= compression <= 4:
        raise InvalidRecordError(f"unknown compression code {compression}")
    if records:
        base = records[0].offset if base_offset is None else base_offset
        base_ts = records[0].timestamp
        max_ts = max(r.timestamp for r in records) if max_timestamp is None else max_timestamp
        span = records[-1].offset - base
        payload = compress(compression, _encode_records(records, base, base_ts))
    else:
        if base_offset is None:
            raise ValueError("an empty batch needs an explicit base_offset")
        base = base_offset
        base_ts = max_ts = -1 if max_timestamp is None else max_timestamp
        span = 0
        compression = 0
        payload = b""
    if last_offset_delta is not None:
        if last_offset_delta < span:
            raise ValueError(f"last_offset_delta {last_offset_delta} does not cover the last "
                             f"record (delta {span})")
        span = last_offset_delta
    attributes = compression | attributes_extra
    after_crc = _AFTER_CRC.pack(attributes, span, base_ts, max_ts, producer_id, producer_epoch,
                                base_sequence, len(records)) + payload
    crc = google_crc32c.value(after_crc)
    batch_length = HEADER_SIZE - LOG_OVERHEAD + len(payload)
    return _PREFIX.pack(base, batch_length, partition_leader_epoch, 2) + struct.pack(">I", crc) \
        + after_crc


# -- decoding ------------------------------------------------------------------------


def decode_batch(batch: Buffer) -> tuple[BatchHeader, list[Record]]:
    """The header and records of exactly one v2 batch (CRC checked, decompressed).

    Raises CorruptRecordError (bad CRC, cut short, undecompressable) or
    InvalidRecordError (not one v2 batch, malformed records, count mismatch).
    """
    headers = parse_batches(batch, verify_crc=True)
    if len(headers) != 1:
        raise InvalidRecordError(f"expected one record batch, found {len(headers)}")
    header = headers[0]
    return header, _decode_records(header, bytes(batch[HEADER_SIZE : header.size]))


def decode_batches(blob: Buffer) -> list[tuple[BatchHeader, list[Record]]]:
    """decode_batch for every batch of a Records blob (e.g. a segment file's contents)."""
    out = []
    for header in parse_batches(blob, verify_crc=True):
        start = header.position
        out.append((header, _decode_records(
            header, bytes(blob[start + HEADER_SIZE : start + header.size]))))
    return out


def decode_records(header: BatchHeader, payload: Buffer) -> list[Record]:
    """The records of a batch whose header is already parsed; `payload` is what follows
    its 61 header bytes (possibly compressed). CRC is not checked here."""
    return _decode_records(header, bytes(payload))


def _decode_records(header: BatchHeader, payload: bytes) -> list[Record]:
    data = decompress(header.compression, payload) if header.compression else payload
    count = header.record_count
    base = header.base_offset
    base_ts = header.base_timestamp
    log_append_time = header.max_timestamp if header.timestamp_type == 1 else None
    records: list[Record] = []
    pos = 0
    end = len(data)
    try:
        for _ in range(count):
            length, pos = _read_varint(data, pos)
            stop = pos + length
            if length < 6 or stop > end:  # 6: the smallest possible record body
                raise InvalidRecordError(f"record of length {length} at byte {pos} does not fit "
                                         f"the batch at offset {base}")
            pos += 1  # attributes
            ts_delta, pos = _read_varint(data, pos)
            offset_delta, pos = _read_varint(data, pos)
            klen, pos = _read_varint(data, pos)
            key: bytes | None = None
            if klen >= 0:
                key = data[pos : pos + klen]
                pos += klen
            vlen, pos = _read_varint(data, pos)
            value: bytes | None = None
            if vlen >= 0:
                value = data[pos : pos + vlen]
                pos += vlen
            nheaders, pos = _read_varint(data, pos)
            if nheaders < 0:
                raise InvalidRecordError(f"negative header count {nheaders}")
            rheaders: list[tuple[str, bytes | None]] = []
            for _ in range(nheaders):
                hlen, pos = _read_varint(data, pos)
                if hlen < 0:
                    raise InvalidRecordError("null record header key")
                name = data[pos : pos + hlen].decode()
                pos += hlen
                hvlen, pos = _read_varint(data, pos)
                hvalue: bytes | None = None
                if hvlen >= 0:
                    hvalue = data[pos : pos + hvlen]
                    pos += hvlen
                rheaders.append((name, hvalue))
            if pos != stop:
                raise InvalidRecordError(f"record at offset {base + offset_delta} is "
                                         f"{length} bytes long but its fields take "
                                         f"{length + pos - stop}")
            ts = log_append_time if log_append_time is not None else base_ts + ts_delta
            records.append(Record(base + offset_delta, ts, key, value, tuple(rheaders)))
    except IndexError as exc:
        raise InvalidRecordError(f"records of the batch at offset {base} are cut short") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(f"record header key is not UTF-8 in the batch at offset "
                                 f"{base}") from exc
    if pos != end:
        raise InvalidRecordError(f"{end - pos} bytes left after the {count} records of the "
                                 f"batch at offset {base}")
    return records
