"""The wire codec without sockets: every response version we serve decodes with Kafka's schemas."""

from __future__ import annotations

import struct
import uuid

import pytest
from kio.index import load_response_schema
from kio.serial import entity_reader

from broker._apis import SUPPORTED, api_versions_body
from broker._codec import ProtocolError, UnsupportedVersion, decode_request, encode_response

TOPIC_ID = uuid.uuid4()
BATCH = b"\x00" * 61  # opaque to the codec

SAMPLES = {
    0: {"responses": [{"name": "t", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 42, "log_append_time": -1, "log_start_offset": 0}]}]},
    1: {"error_code": 0, "session_id": 0, "responses": [{"topic": "t", "topic_id": TOPIC_ID, "partitions": [
        {"partition_index": 0, "error_code": 0, "high_watermark": 10, "last_stable_offset": 10,
         "log_start_offset": 0, "aborted_transactions": [], "preferred_read_replica": -1,
         "records": [BATCH, memoryview(BATCH)]}]}]},
    2: {"topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": 0, "timestamp": -1, "offset": 7, "leader_epoch": 0}]}]},
    3: {"brokers": [{"node_id": 0, "host": "127.0.0.1", "port": 9092, "rack": None}],
        "cluster_id": "c", "controller_id": 0,
        "topics": [{"error_code": 0, "name": "t", "topic_id": TOPIC_ID, "is_internal": False, "partitions": [
            {"error_code": 0, "partition_index": 0, "leader_id": 0, "leader_epoch": 0,
             "replica_nodes": [0], "isr_nodes": [0], "offline_replicas": []}]}]},
    18: api_versions_body(),
    19: {"topics": [{"name": "t", "error_code": 0, "num_partitions": 1, "replication_factor": 1, "configs": []}]},
    20: {"responses": [{"name": "t", "topic_id": TOPIC_ID, "error_code": 0}]},
    22: {"error_code": 0, "producer_id": 5, "producer_epoch": 0},
    32: {"results": [{"error_code": 0, "resource_type": 2, "resource_name": "t", "configs": [
        {"name": "retention.ms", "value": "1", "read_only": False, "config_source": 5,
         "is_sensitive": False, "synonyms": []}]}]},
    37: {"results": [{"name": "t", "error_code": 0}]},
    8: {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "error_code": 0}]}]},
    9: {"error_code": 0, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "committed_offset": 5, "committed_leader_epoch": -1, "metadata": None,
         "error_code": 0}]}]},
    10: {"error_code": 0, "error_message": None, "node_id": 0, "host": "127.0.0.1", "port": 9092},
    11: {"error_code": 79, "generation_id": -1, "protocol_type": None, "protocol_name": None,
         "leader": "", "member_id": "m-1", "members": [
             {"member_id": "m-1", "group_instance_id": None, "metadata": b"\x00\x01"}]},
    12: {"error_code": 27},
    13: {"error_code": 0, "members": [{"member_id": "m-1", "group_instance_id": None, "error_code": 0}]},
    14: {"error_code": 0, "protocol_type": "consumer", "protocol_name": "range", "assignment": b"\x00"},
    15: {"groups": [{"error_code": 0, "group_id": "g", "group_state": "Stable", "protocol_type": "consumer",
                     "protocol_data": "range", "members": [
                         {"member_id": "m", "group_instance_id": None, "client_id": "c", "client_host": "h",
                          "member_metadata": b"", "member_assignment": b""}]}]},
    16: {"error_code": 0, "groups": [{"group_id": "g", "protocol_type": "consumer", "group_state": "Empty"}]},
    42: {"results": [{"group_id": "g", "error_code": 0}]},
    33: {"responses": [{"error_code": 0, "error_message": None, "resource_type": 2, "resource_name": "t"}]},
    44: {"responses": [{"error_code": 40, "error_message": "bad", "resource_type": 2, "resource_name": "t"}]},
}


@pytest.mark.parametrize(("api_key", "version"), [
    (key, v) for key, (lo, hi) in SUPPORTED.items() for v in range(lo, hi + 1)
])
def test_every_served_response_version_decodes_with_kafkas_schema(api_key: int, version: int) -> None:
    body = {"throttle_time": 0, **SAMPLES[api_key]}
    wire = b"".join(encode_response(api_key, version, 99, body))
    size, correlation_id = struct.unpack_from(">ii", wire, 0)
    assert size == len(wire) - 4 and correlation_id == 99
    schema = load_response_schema(api_key, version)
    offset = 8 + (1 if schema.__flexible__ and api_key != 18 else 0)
    decoded, used = entity_reader(schema)(wire, offset)
    assert offset + used == len(wire), "trailing or missing bytes"
    if api_key == 1:
        records = decoded.responses[0].partitions[0].records
        assert records == BATCH + BATCH  # record chunks pass through whole
    if api_key == 0:
        assert decoded.responses[0].partition_responses[0].base_offset == 42


def header(api_key: int, version: int, flexible: bool) -> bytes:
    return struct.pack(">hhih", api_key, version, 1, 1) + b"c" + (b"\x00" if flexible else b"")


def test_unknown_tagged_field_inside_a_nested_struct_is_skipped() -> None:
    topic = uuid.UUID(int=0).bytes + b"\x04abc" + b"\x01" + b"\x07\x02hi"  # tag 7, 2 bytes: unknown
    frame = header(3, 12, True) + b"\x02" + topic + b"\x01\x00\x00"
    request = decode_request(frame, SUPPORTED)
    assert [t.name for t in request.body.topics] == ["abc"]


def test_truncated_body_is_a_protocol_error() -> None:
    frame = header(3, 12, True) + b"\x02"
    with pytest.raises(ProtocolError):
        decode_request(frame, SUPPORTED)


def test_version_outside_the_served_range_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(header(0, 2, False), SUPPORTED)  # Produce v2: before record batches v2
    assert (info.value.api_key, info.value.api_version) == (0, 2)
