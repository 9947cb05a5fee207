"""A minimal Fetch client for measuring a broker's fetch path, not a client's decoding.

librdkafka turns every record into a Python object, and on two cores that, not the
broker, bounds a confluent-kafka consumer. This client sends plain Fetch v4 requests over
one socket and walks only the record-batch headers of each response (to learn the next
offset and count records), so the broker is what is measured. Any Kafka-compatible
broker answers Fetch v4.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

_BATCH_PREFIX = struct.Struct(">qi")  # base offset, batch length
_LAST_DELTA_AT = 23
_COUNT_AT = 57
_HEADER = 61


@dataclass
class RawFetchResult:
    seconds: float
    batch_bytes: int
    records: int
    requests: int


def _fetch_request(correlation_id: int, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
    name = topic.encode()
    header = struct.pack(">hhih", 1, 4, correlation_id, 5) + b"bench"
    body = struct.pack(">iiiib", -1, 500, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> memoryview:
    if len(buf) < n:
        buf.extend(bytes(n - len(buf)))
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("broker closed the connection")
        got += k
    return view


def _walk_records(data: memoryview) -> tuple[int, int, int]:
    """(whole-batch bytes, records, next offset or -1) of a Records blob."""
    pos = 0
    size = len(data)
    records = 0
    next_offset = -1
    while pos + _HEADER <= size:
        base, length = _BATCH_PREFIX.unpack_from(data, pos)
        end = pos + 12 + length
        if end > size:
            break  # a partial trailing batch (allowed by the protocol)
        last_delta = struct.unpack_from(">i", data, pos + _LAST_DELTA_AT)[0]
        records += struct.unpack_from(">i", data, pos + _COUNT_AT)[0]
        next_offset = base + last_delta + 1
        pos = end
    return pos, records, next_offset


def fetch_all(host: str, port: int, topic: str, expected_records: int, *,
              max_bytes: int = 8 * 1024 * 1024, timeout: float = 120.0) -> RawFetchResult:
    """Fetch partition 0 of `topic` from offset 0 until `expected_records` were seen."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(max_bytes + 4096)
    offset = 0
    total_bytes = 0
    records = 0
    requests = 0
    started = time.perf_counter()
    try:
        while records < expected_records:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"raw fetch saw {records} of {expected_records} records in {timeout}s")
            requests += 1
            sock.sendall(_fetch_request(requests, topic, 0, offset, max_bytes))
            size = struct.unpack(">i", bytes(_recv_exact(sock, 4, buf)))[0]
            resp = _recv_exact(sock, size, buf)
            # correlation id, throttle, 1 topic (name), 1 partition
            pos = 4 + 4 + 4
            name_len = struct.unpack_from(">h", resp, pos)[0]
            pos += 2 + name_len + 4
            _, error, _, _ = struct.unpack_from(">ihqq", resp, pos)
            if error:
                raise RuntimeError(f"fetch error code {error} at offset {offset}")
            pos += 4 + 2 + 8 + 8
            aborted = struct.unpack_from(">i", resp, pos)[0]
            pos += 4 + max(aborted, 0) * 16
            records_len = struct.unpack_from(">i", resp, pos)[0]
            pos += 4
            if records_len <= 0:
                continue
            used, count, next_offset = _walk_records(resp[pos:pos + records_len])
            total_bytes += used
            records += count
            if next_offset > offset:
                offset = next_offset
    finally:
        sock.close()
    return RawFetchResult(time.perf_counter() - started, total_bytes, records, requests)
