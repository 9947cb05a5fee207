"""Kafka wire codec: request frames in, response frames out. No I/O.

Requests are decoded with kio's native readers (Kafka's own schemas, every version). An
unknown tagged field makes kio raise ``KeyError``; the protocol says such fields must be
ignored, so that case falls back to a slower reader here that skips them.

Responses are encoded from plain dicts by writers compiled from the same kio schemas,
so handlers write one dict per API for every version: fields a version lacks are left
out, fields a version needs but the dict lacks take their schema default. The encoder
emits a list of buffers, which lets record batches read from the log go to the socket
without being copied. Tagged fields are written only when they differ from their
default, so clients that cannot parse them (librdkafka before 2.2) never see them.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from functools import cache
from typing import Any, cast

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)
from kio.serial._parse import get_field_reader
from kio.serial.readers import (
    read_compact_array_length,
    read_int8,
    read_legacy_array_length,
    read_nullable_legacy_string,
    read_unsigned_varint,
)

__all__ = [
    "API_VERSIONS_KEY",
    "UNKNOWN_OPS",
    "Buffers",
    "ProtocolError",
    "Request",
    "UnsupportedVersion",
    "decode_request",
    "encode_response",
    "frame_size",
    "millis",
]

API_VERSIONS_KEY = 18
PRODUCE_KEY = 0
UNKNOWN_OPS = -(2**31)  # "authorized operations were not requested"


def millis(value: Any) -> int:
    """A kio duration field (a timedelta) as whole milliseconds."""
    if hasattr(value, "total_seconds"):
        return round(float(value.total_seconds()) * 1000)
    return int(value)

Buffers = list[bytes | memoryview]


class ProtocolError(Exception):
    """A frame that cannot be understood; the connection is closed."""


class UnsupportedVersion(Exception):
    """A request for an API or version this broker does not serve."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        super().__init__(f"unsupported API key {api_key} version {api_version}")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


@dataclass(frozen=True, slots=True)
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    peer_host: str = ""


_I16x2_I32 = struct.Struct(">hhi")
_I32 = struct.Struct(">i")


def frame_size(prefix: bytes | memoryview) -> int:
    """Size of the frame announced by its 4-byte prefix."""
    return int(_I32.unpack_from(prefix)[0])


# ---------------------------------------------------------------------------------------
# Decoding


def decode_request(frame: bytes | bytearray | memoryview, supported: dict[int, tuple[int, int]],
                   peer_host: str = "") -> Request:
    """Decode one request frame (without its size prefix).

    Raises ``UnsupportedVersion`` for an API or version outside ``supported`` (the header
    is readable, so the caller can answer), ``ProtocolError`` for anything unreadable.
    """
    if len(frame) < 8:
        raise ProtocolError(f"request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id = _I16x2_I32.unpack_from(frame, 0)
    window = supported.get(api_key)
    if window is None or not window[0] <= api_version <= window[1]:
        raise UnsupportedVersion(api_key, api_version, correlation_id)
    try:
        schema = load_request_schema(api_key, api_version)
    except Exception as exc:  # kio lacks the schema: treat as unsupported
        raise UnsupportedVersion(api_key, api_version, correlation_id) from exc
    try:
        # kio's native readers take read-only buffers only
        readonly = memoryview(frame).toreadonly() if isinstance(frame, bytearray) else frame
        client_id, size = read_nullable_legacy_string(readonly, 8)
        offset = 8 + size
        if schema.__header_schema__.__flexible__:
            offset = _skip_tagged_fields(readonly, offset)
        if api_key == PRODUCE_KEY and isinstance(frame, bytearray):
            body = _read_produce(frame, offset, flexible=api_version >= 9)
        else:
            body = _read_body(schema, readonly, offset)
    except (UnsupportedVersion, ProtocolError):
        raise
    except Exception as exc:
        raise ProtocolError(
            f"cannot decode API {api_key} v{api_version} request: {type(exc).__name__}: {exc}"
        ) from exc
    return Request(api_key, api_version, correlation_id, client_id, body, peer_host)


def _read_body(schema: type[Any], frame: bytes | bytearray | memoryview, offset: int) -> Any:
    try:
        body, _ = entity_reader(schema)(frame, offset)
    except KeyError:  # an unknown tagged field: read again, skipping such fields
        body, _ = _read_tolerant(schema, frame, offset)
    return body


def _uvarint_at(buf: bytes | bytearray | memoryview, offset: int) -> tuple[int, int]:
    """(value, offset after it): kio's readers return (value, bytes consumed)."""
    value, used = read_unsigned_varint(buf, offset)
    return int(value), offset + used


def _skip_tagged_fields(buf: bytes | bytearray | memoryview, offset: int) -> int:
    count, offset = _uvarint_at(buf, offset)
    for _ in range(count):
        _, offset = _uvarint_at(buf, offset)
        size, offset = _uvarint_at(buf, offset)
        offset += size
        if offset > len(buf):
            raise ProtocolError("tagged field runs past the end of the frame")
    return offset


def _read_tolerant(entity_type: type[Any], buf: bytes | bytearray | memoryview, offset: int) -> tuple[Any, int]:
    values: dict[str, Any] = {}
    tagged: dict[int, Field[Any]] = {}
    for f in fields(entity_type):
        field_tag = get_field_tag(f)
        if field_tag is not None:
            tagged[int(field_tag)] = f
            continue
        values[f.name], offset = _read_field_tolerant(entity_type, f, buf, offset, is_tag=False)
    if entity_type.__flexible__:
        count, offset = _uvarint_at(buf, offset)
        for _ in range(count):
            tag, offset = _uvarint_at(buf, offset)
            size, offset = _uvarint_at(buf, offset)
            known = tagged.get(tag)
            if known is not None:
                values[known.name], _ = _read_field_tolerant(entity_type, known, buf, offset, is_tag=True)
            offset += size
    return entity_type(**values), offset


def _read_field_tolerant(
    entity_type: type[Any], f: Field[Any], buf: bytes | bytearray | memoryview, offset: int, *, is_tag: bool
) -> tuple[Any, int]:
    kind = classify_field(f)
    if isinstance(kind, PrimitiveField | PrimitiveTupleField):
        reader = get_field_reader(entity_type, f, False, is_tag)
        value, used = reader(buf, offset)
        return value, offset + used
    if isinstance(kind, EntityField):
        if is_optional(f) and not is_tag:
            marker, used = read_int8(buf, offset)
            offset += used
            if marker < 0:
                return None, offset
        return _read_tolerant(kind.type_, buf, offset)
    assert isinstance(kind, EntityTupleField)
    if entity_type.__flexible__:
        length, used = read_compact_array_length(buf, offset)
    else:
        length, used = read_legacy_array_length(buf, offset)
    offset += used
    if length is None or length < 0:
        return None, offset
    items = []
    for _ in range(length):
        item, offset = _read_tolerant(kind.type_, buf, offset)
        items.append(item)
    return tuple(items), offset


# ---------------------------------------------------------------------------------------
# Produce, the hot path: decoded by hand so each partition's records stay a view into the
# received frame (a writable buffer the log then rewrites in place and writes out).


@dataclass(frozen=True, slots=True)
class ProducePartition:
    index: int
    records: memoryview | None


@dataclass(frozen=True, slots=True)
class ProduceTopic:
    name: str
    partition_data: tuple[ProducePartition, ...]


@dataclass(frozen=True, slots=True)
class ProduceBody:
    transactional_id: str | None
    acks: int
    timeout: int
    topic_data: tuple[ProduceTopic, ...]


_I16 = struct.Struct(">h")


def _read_produce(frame: bytearray, offset: int, *, flexible: bool) -> ProduceBody:
    view = memoryview(frame)  # writable: the records are handed on as views of it
    ro = view.toreadonly()  # for kio's varint reader
    end = len(frame)

    def need(n: int) -> None:
        if offset + n > end:
            raise ProtocolError("produce request ends early")

    def read_string(nullable: bool) -> str | None:
        nonlocal offset
        if flexible:
            n, offset = _uvarint_at(ro, offset)
            n -= 1
        else:
            need(2)
            n = _I16.unpack_from(frame, offset)[0]
            offset += 2
        if n < 0:
            if not nullable:
                raise ProtocolError("null string in a produce request")
            return None
        need(n)
        text = bytes(view[offset:offset + n]).decode()
        offset += n
        return text

    def read_count() -> int:
        nonlocal offset
        if flexible:
            n, offset = _uvarint_at(ro, offset)
            return n - 1
        need(4)
        n = _I32.unpack_from(frame, offset)[0]
        offset += 4
        return int(n)

    transactional_id = read_string(nullable=True)
    need(6)
    acks, timeout = struct.unpack_from(">hi", frame, offset)
    offset += 6
    topics = []
    for _ in range(max(read_count(), 0)):
        name = read_string(nullable=False)
        assert name is not None
        partitions = []
        for _ in range(max(read_count(), 0)):
            need(4)
            index = _I32.unpack_from(frame, offset)[0]
            offset += 4
            size = read_count()  # records: nullable bytes, same length encoding as arrays
            records = None
            if size >= 0:
                need(size)
                records = view[offset:offset + size]
                offset += size
            if flexible:
                offset = _skip_tagged_fields(ro, offset)
            partitions.append(ProducePartition(index, records))
        if flexible:
            offset = _skip_tagged_fields(ro, offset)
        topics.append(ProduceTopic(name, tuple(partitions)))
    if flexible:
        offset = _skip_tagged_fields(ro, offset)
    return ProduceBody(transactional_id, acks, timeout, tuple(topics))


# ---------------------------------------------------------------------------------------
# Encoding

_Writer = Callable[[Buffers, Any], None]

_pack_i8 = struct.Struct(">b").pack
_pack_i16 = struct.Struct(">h").pack
_pack_i32 = struct.Struct(">i").pack
_pack_i64 = struct.Struct(">q").pack
_pack_u16 = struct.Struct(">H").pack
_pack_u32 = struct.Struct(">I").pack
_pack_u64 = struct.Struct(">Q").pack
_pack_f64 = struct.Struct(">d").pack
_ZERO_UUID = bytes(16)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_UVARINT_SMALL = [uvarint(i) for i in range(256)]


def _uv(value: int) -> bytes:
    return _UVARINT_SMALL[value] if value < 256 else uvarint(value)


def _int_writer(pack: Callable[[int], bytes]) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        out.append(pack(int(value)))

    return write


def _write_bool(out: Buffers, value: Any) -> None:
    out.append(b"\x01" if value else b"\x00")


def _write_f64(out: Buffers, value: Any) -> None:
    out.append(_pack_f64(float(value)))


def _write_uuid(out: Buffers, value: Any) -> None:
    out.append(_ZERO_UUID if value is None else cast(uuid.UUID, value).bytes)


def _as_bytes(value: Any) -> bytes | memoryview | list[bytes | memoryview]:
    if isinstance(value, str):
        return value.encode()
    return cast(bytes, value)


def _blob_parts(value: Any) -> tuple[int, Sequence[bytes | memoryview]]:
    data = _as_bytes(value)
    if isinstance(data, list):  # a list of buffers (record batches), passed through uncopied
        return sum(len(d) for d in data), data
    return len(data), (data,)


def _compact_blob(nullable: bool) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        if value is None:
            # A field that became nullable in a later version is written empty in the
            # versions where it is not (None means "not set" in handler dicts).
            out.append(b"\x00" if nullable else b"\x01")
            return
        size, parts = _blob_parts(value)
        out.append(_uv(size + 1))
        out.extend(parts)

    return write


def _legacy_string(nullable: bool) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        if value is None:
            out.append(b"\xff\xff" if nullable else b"\x00\x00")
            return
        size, parts = _blob_parts(value)
        out.append(_pack_i16(size))
        out.extend(parts)

    return write


def _legacy_bytes(nullable: bool) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a non-nullable field")
            out.append(b"\xff\xff\xff\xff")
            return
        size, parts = _blob_parts(value)
        out.append(_pack_i32(size))
        out.extend(parts)

    return write


def _primitive_writer(kafka_type: str, flexible: bool, nullable: bool) -> _Writer:
    ints = {
        "int8": _pack_i8, "int16": _pack_i16, "int32": _pack_i32, "int64": _pack_i64,
        "uint16": _pack_u16, "uint32": _pack_u32, "uint64": _pack_u64,
        "error_code": _pack_i16, "timedelta_i32": _pack_i32, "timedelta_i64": _pack_i64,
        "datetime_i64": _pack_i64,
    }
    if kafka_type in ints:
        return _int_writer(ints[kafka_type])
    if kafka_type == "uint8":
        return _int_writer(struct.Struct(">B").pack)
    if kafka_type == "bool":
        return _write_bool
    if kafka_type == "float64":
        return _write_f64
    if kafka_type == "uuid":
        return _write_uuid
    if kafka_type == "string":
        return _compact_blob(nullable) if flexible else _legacy_string(nullable)
    if kafka_type in ("bytes", "records"):
        return _compact_blob(nullable) if flexible else _legacy_bytes(nullable)
    raise NotImplementedError(f"no writer for Kafka type {kafka_type!r}")


def _array_writer(item: _Writer, flexible: bool, nullable: bool) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a non-nullable array")
            out.append(b"\x00" if flexible else b"\xff\xff\xff\xff")
            return
        out.append(_uv(len(value) + 1) if flexible else _pack_i32(len(value)))
        for v in value:
            item(out, v)

    return write


_IMPLICIT = {
    "int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint8": 0, "uint16": 0, "uint32": 0,
    "uint64": 0, "error_code": 0, "timedelta_i32": 0, "timedelta_i64": 0, "datetime_i64": -1,
    "bool": False, "float64": 0.0, "uuid": None, "string": "", "bytes": b"", "records": None,
}


def _plain_default(f: Field[Any]) -> Any:
    """The value a field takes when a handler's dict leaves it out."""
    if f.default is not MISSING:
        value = f.default
        if isinstance(value, uuid.UUID):
            return value
        if hasattr(value, "total_seconds"):
            return round(value.total_seconds() * 1000)
        if hasattr(value, "timestamp"):
            return round(value.timestamp() * 1000)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else value
    kind = classify_field(f)
    if kind.is_array:
        return None if is_optional(f) else ()
    if isinstance(kind, EntityField):
        return None if is_optional(f) else {}
    if is_optional(f):
        return None
    return _IMPLICIT.get(get_schema_field_type(f), 0)


@cache
def _dict_writer(entity_type: type[Any]) -> _Writer:
    flexible = bool(entity_type.__flexible__)
    plain: list[tuple[str, _Writer, Any]] = []
    tagged: list[tuple[int, str, _Writer, Any]] = []
    for f in fields(entity_type):
        tag = get_field_tag(f)
        kind = classify_field(f)
        nullable = is_optional(f) and tag is None
        writer: _Writer
        if isinstance(kind, PrimitiveField):
            writer = _primitive_writer(get_schema_field_type(f), flexible, nullable)
        elif isinstance(kind, PrimitiveTupleField):
            inner = _primitive_writer(get_schema_field_type(f), flexible, False)
            writer = _array_writer(inner, flexible, nullable)
        elif isinstance(kind, EntityField):
            writer = _nullable_struct(_dict_writer(kind.type_)) if nullable else _dict_writer(kind.type_)
        else:
            writer = _array_writer(_dict_writer(kind.type_), flexible, nullable)
        default = _plain_default(f)
        if tag is None:
            plain.append((f.name, writer, default))
        else:
            tagged.append((int(tag), f.name, writer, default))
    tagged.sort()

    def write(out: Buffers, value: Any) -> None:
        get = value.get
        for name, writer, default in plain:
            writer(out, get(name, default))
        if not flexible:
            return
        present = []
        for tag, name, writer, default in tagged:
            v = get(name, default)
            if v == default or v is None:
                continue
            body: Buffers = []
            writer(body, v)
            present.append((tag, body))
        out.append(_uv(len(present)))
        for tag, body in present:
            out.append(_uv(tag))
            out.append(_uv(sum(len(b) for b in body)))
            out.extend(body)

    return write


def _nullable_struct(inner: _Writer) -> _Writer:
    def write(out: Buffers, value: Any) -> None:
        if value is None:
            out.append(b"\xff")
            return
        out.append(b"\x01")
        inner(out, value)

    return write


def encode_response(api_key: int, api_version: int, correlation_id: int, body: dict[str, Any]) -> Buffers:
    """Encode a response, size prefix and header included, as a list of buffers."""
    schema = load_response_schema(api_key, api_version)
    out: Buffers = [b"", _pack_i32(correlation_id)]
    # ApiVersions answers with header v0 always, so a client that sent a version we do
    # not know can still read it.
    if schema.__flexible__ and api_key != API_VERSIONS_KEY:
        out.append(b"\x00")
    _dict_writer(schema)(out, body)
    out[0] = _pack_i32(sum(len(b) for b in out))
    return out

