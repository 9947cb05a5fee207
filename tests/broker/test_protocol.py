"""The broker on the wire: bad frames, unknown APIs and versions, tagged fields."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import BrokerProcess


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def request(api_key: int, version: int, correlation_id: int, body: bytes, *, flexible_header: bool) -> bytes:
    header = struct.pack(">hhi", api_key, version, correlation_id) + struct.pack(">h", 4) + b"test"
    if flexible_header:
        header += b"\x00"  # no tagged fields
    return frame(header + body)


def read_response(s: socket.socket) -> bytes:
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, size)


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def is_closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    correlation_id, error, count = struct.unpack_from(">ihi", payload, 0)
    apis = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
        apis[key] = (lo, hi)
    return correlation_id, error, apis


def test_api_versions_advertises_only_what_is_implemented(broker: BrokerProcess) -> None:
    with connect(broker.port) as s:
        s.sendall(request(18, 0, 7, b"", flexible_header=False))
        correlation_id, error, apis = parse_api_versions_v0(read_response(s))
    assert (correlation_id, error) == (7, 0)
    assert apis[0] == (3, 9) and apis[1] == (4, 16) and apis[3] == (0, 12) and apis[18] == (0, 3)
    assert 23 not in apis  # OffsetForLeaderEpoch
    assert 68 not in apis  # ConsumerGroupHeartbeat


def test_api_versions_from_the_future_gets_a_v0_answer(broker: BrokerProcess) -> None:
    with connect(broker.port) as s:
        s.sendall(request(18, 99, 11, b"\x00", flexible_header=True))
        correlation_id, error, apis = parse_api_versions_v0(read_response(s))
    assert (correlation_id, error) == (11, 35)  # UNSUPPORTED_VERSION, with the list to retry with
    assert apis[18] == (0, 3)


def test_unknown_tagged_fields_are_ignored(broker: BrokerProcess) -> None:
    # ApiVersions v3 body: client_software_name, client_software_version (compact strings),
    # then tagged fields: one unknown tag 42 carrying 3 bytes.
    body = b"\x05test" + b"\x041.0" + b"\x01" + b"\x2a\x03abc"
    with connect(broker.port) as s:
        s.sendall(request(18, 3, 12, body, flexible_header=True))
        payload = read_response(s)
    correlation_id, error = struct.unpack_from(">ih", payload, 0)
    assert (correlation_id, error) == (12, 0)


def test_unknown_api_key_closes_only_that_connection(broker: BrokerProcess) -> None:
    with connect(broker.port) as bad, connect(broker.port) as good:
        bad.sendall(request(9999, 0, 1, b"", flexible_header=False))
        assert is_closed(bad)
        good.sendall(request(18, 0, 2, b"", flexible_header=False))
        assert parse_api_versions_v0(read_response(good))[:2] == (2, 0)


def test_oversized_frame_is_refused(broker: BrokerProcess) -> None:
    with connect(broker.port) as s:
        s.sendall(struct.pack(">i", 2_000_000_000) + b"x" * 100)
        assert is_closed(s)


def test_garbage_truncated_and_corrupt_frames_do_not_disturb_a_good_client(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("steady", 1, 1)])["steady"].result(10)
    stop = threading.Event()
    attacks = {"sent": 0}

    def attacker() -> None:
        rng = random.Random(1234)
        while not stop.is_set():
            kind = rng.randrange(4)
            try:
                with connect(broker.port) as s:
                    if kind == 0:  # random bytes
                        s.sendall(rng.randbytes(rng.randrange(1, 300)))
                    elif kind == 1:  # a valid size prefix, random payload
                        s.sendall(frame(rng.randbytes(rng.randrange(8, 200))))
                    elif kind == 2:  # a real header, then a body cut short
                        s.sendall(request(3, 12, 1, b"\x02\x00", flexible_header=True)[:-1])
                    else:  # a Produce with a corrupt record batch
                        s.sendall(request(0, 9, 1, corrupt_produce_body(rng), flexible_header=True))
                        s.settimeout(2)
                        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                            read_response(s)
                attacks["sent"] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=attacker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(500):
            producer.produce("steady", value=f"ok {i}".encode())
            if i % 50 == 0:
                producer.flush(10)
        assert producer.flush(30) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert attacks["sent"] > 20
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    consumer.assign([TopicPartition("steady", 0, 0)])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 500 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            values.append(m.value())
    consumer.close()
    assert values == [f"ok {i}".encode() for i in range(500)]
    assert broker.proc is not None and broker.proc.poll() is None


def corrupt_produce_body(rng: random.Random) -> bytes:
    """Produce v9 to topic 'steady' partition 0, with a batch whose CRC is wrong."""
    batch = bytearray(rng.randbytes(80))
    struct.pack_into(">qii", batch, 0, 0, len(batch) - 12, 0)
    batch[16] = 2  # magic
    body = b"\x00"  # transactional_id: null
    body += struct.pack(">hi", -1, 5000)  # acks, timeout
    body += b"\x02" + b"\x07steady"  # one topic
    body += b"\x02" + struct.pack(">i", 0) + bytes([len(batch) + 1]) + bytes(batch) + b"\x00"
    body += b"\x00"  # topic tagged fields
    body += b"\x00"  # request tagged fields
    return body


def test_corrupt_batch_is_rejected_with_corrupt_message(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("steady", 1, 1)])["steady"].result(10)
    with connect(broker.port) as s:
        s.sendall(request(0, 9, 5, corrupt_produce_body(random.Random(1)), flexible_header=True))
        payload = read_response(s)
    # header v1: correlation id, tagged fields; body: responses[1] name 'steady' partitions[1]
    assert struct.unpack_from(">i", payload, 0)[0] == 5
    pos = 4 + 1 + 1 + 1 + len("steady") + 1
    index, error, base_offset = struct.unpack_from(">ihq", payload, pos)
    assert (index, error, base_offset) == (0, 2, -1)  # CORRUPT_MESSAGE
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    assert consumer.get_watermark_offsets(TopicPartition("steady", 0), timeout=10) == (0, 0)
    consumer.close()
