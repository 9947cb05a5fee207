"""Build valid Kafka v2 record batches (uncompressed) for storage tests."""

from __future__ import annotations

import struct

import google_crc32c


def _varint(value: int) -> bytes:
    zz = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zz & 0x7F
        zz >>= 7
        if zz:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _record(offset_delta: int, ts_delta: int, key: bytes | None, value: bytes) -> bytes:
    body = b"\x00" + _varint(ts_delta) + _varint(offset_delta)
    body += _varint(-1) if key is None else _varint(len(key)) + key
    body += _varint(len(value)) + value + _varint(0)
    return _varint(len(body)) + body


def make_batch(
    values: list[bytes],
    *,
    base_offset: int = 0,
    timestamp: int = 1_000,
    timestamps: list[int] | None = None,
    keys: list[bytes | None] | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    leader_epoch: int = -1,
) -> bytes:
    """One v2 batch holding `values`, with a correct CRC."""
    stamps = timestamps or [timestamp] * len(values)
    keys = keys or [None] * len(values)
    records = b"".join(
        _record(i, stamps[i] - stamps[0], keys[i], v) for i, v in enumerate(values)
    )
    after_crc = struct.pack(
        ">hiqqqhii", attributes, len(values) - 1, stamps[0], max(stamps), producer_id,
        producer_epoch, base_sequence, len(values),
    ) + records
    crc = google_crc32c.value(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", base_offset, batch_length, leader_epoch, 2, crc) + after_crc


def batch_of_size(size: int, **kwargs: object) -> bytes:
    """A one-record batch of exactly `size` bytes (size >= 80)."""
    value_len = size - 70
    while True:
        batch = make_batch([b"x" * value_len], **kwargs)  # type: ignore[arg-type]
        if len(batch) == size:
            return batch
        value_len += size - len(batch)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = zz = 0
    while True:
        byte = buf[pos]
        pos += 1
        zz |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (zz >> 1) ^ -(zz & 1), pos


def decode_records(blob: bytes) -> list[tuple[int, bytes | None, bytes, int]]:
    """(offset, key, value, timestamp) of every record in uncompressed v2 batches."""
    out: list[tuple[int, bytes | None, bytes, int]] = []
    pos = 0
    while pos < len(blob):
        base, length = struct.unpack_from(">qi", blob, pos)
        end = pos + 12 + length
        base_ts = struct.unpack_from(">q", blob, pos + 27)[0]
        count = struct.unpack_from(">i", blob, pos + 57)[0]
        p = pos + 61
        for _ in range(count):
            _, p = _read_varint(blob, p)
            p += 1  # attributes
            ts_delta, p = _read_varint(blob, p)
            off_delta, p = _read_varint(blob, p)
            klen, p = _read_varint(blob, p)
            key = None if klen < 0 else blob[p : p + klen]
            p += max(klen, 0)
            vlen, p = _read_varint(blob, p)
            value = blob[p : p + vlen]
            p += vlen
            _, p = _read_varint(blob, p)  # no headers in our batches
            out.append((base + off_delta, key, value, base_ts + ts_delta))
        pos = end
    return out
