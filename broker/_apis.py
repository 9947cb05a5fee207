"""The Kafka APIs this broker serves: request bodies (kio entities) in, response dicts out.

Each handler takes the node and the decoded request and returns the response as a dict
(see ``_codec.encode_response``), or ``None`` when no response is due (acks=0).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kio.schema.errors import ErrorCode as E

from broker._batch import (
    CorruptRecordError,
    InvalidRecordError,
    StorageError,
)
from broker._codec import UNKNOWN_OPS, Request, millis
from broker._config import TOPIC_CONFIGS, ConfigError, validate_topic_configs
from broker._group_apis import GROUP_VERSIONS
from broker._node import Node, PartitionState
from broker._storage import (
    InvalidProducerEpochError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    RecordTooLargeError,
)
from broker._topics import InvalidTopicError, TopicExistsError, TopicMeta, check_topic_name

__all__ = ["HANDLERS", "SUPPORTED", "api_versions_body"]

log = logging.getLogger("vigil.broker")

Handler = Callable[[Node, Request], Awaitable[dict[str, Any] | None]]

_STORAGE_ERRORS: list[tuple[type[Exception], E]] = [
    (CorruptRecordError, E.corrupt_message),
    (RecordTooLargeError, E.message_too_large),
    (OutOfOrderSequenceError, E.out_of_order_sequence_number),
    (InvalidProducerEpochError, E.invalid_producer_epoch),
    (InvalidRecordError, E.invalid_record),
    (OffsetOutOfRangeError, E.offset_out_of_range),
]


def _storage_error_code(exc: Exception) -> E:
    for cls, code in _STORAGE_ERRORS:
        if isinstance(exc, cls):
            return code
    return E.kafka_storage_error if isinstance(exc, StorageError | OSError) else E.unknown_server_error




# --- ApiVersions -------------------------------------------------------------------------


def api_versions_body(error: E = E.none) -> dict[str, Any]:
    return {
        "error_code": error,
        "api_keys": [
            {"api_key": key, "min_version": lo, "max_version": hi}
            for key, (lo, hi) in sorted(SUPPORTED.items())
        ],
        "throttle_time": 0,
    }


async def _api_versions(node: Node, req: Request) -> dict[str, Any]:
    return api_versions_body()


# --- Metadata ----------------------------------------------------------------------------


def _partition_metadata(meta: TopicMeta, node: Node) -> list[dict[str, Any]]:
    out = []
    for index, replicas in enumerate(meta.replicas):
        state = node.partition(meta.name, index)
        out.append({
            "error_code": E.none if state else E.leader_not_available,
            "partition_index": index,
            "leader_id": replicas[0] if state else -1,
            "leader_epoch": meta.leader_epochs[index],
            "replica_nodes": replicas,
            "isr_nodes": replicas if state else [],
            "offline_replicas": [],
        })
    return out


def _topic_metadata(meta: TopicMeta, node: Node) -> dict[str, Any]:
    return {
        "error_code": E.none, "name": meta.name, "topic_id": meta.topic_id,
        "is_internal": meta.internal, "partitions": _partition_metadata(meta, node),
        "topic_authorized_operations": UNKNOWN_OPS,
    }


async def _metadata(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    auto_create = bool(getattr(body, "allow_auto_topic_creation", True)) and \
        node.config.settings["auto.create.topics.enable"] == "true"
    requested = body.topics
    if requested is None or (req.api_version == 0 and not requested):
        topics = [_topic_metadata(m, node) for m in node.registry.all()]  # internal ones flagged, as Kafka
    else:
        topics = []
        for t in requested:
            name = t.name
            topic_id = getattr(t, "topic_id", None)
            if name is None and topic_id not in (None, uuid.UUID(int=0)):
                meta = node.registry.by_id(topic_id)
                if meta is None:
                    topics.append({"error_code": E.unknown_topic_id, "name": None, "topic_id": topic_id,
                                   "partitions": [], "topic_authorized_operations": UNKNOWN_OPS})
                    continue
            else:
                meta = node.registry.get(name)
            if meta is None:
                try:
                    check_topic_name(name)
                except InvalidTopicError:
                    topics.append({"error_code": E.invalid_topic_exception, "name": name,
                                   "partitions": [], "topic_authorized_operations": UNKNOWN_OPS})
                    continue
                if auto_create:
                    meta = node.auto_create(name)
                else:
                    topics.append({"error_code": E.unknown_topic_or_partition, "name": name,
                                   "partitions": [], "topic_authorized_operations": UNKNOWN_OPS})
                    continue
            topics.append(_topic_metadata(meta, node))
    cfg = node.config
    return {
        "throttle_time": 0,
        "brokers": [{"node_id": node.node_id, "host": cfg.advertised_host,
                     "port": cfg.advertised_port, "rack": None}],
        "cluster_id": node.registry.cluster_id,
        "controller_id": node.node_id,
        "topics": topics,
        "cluster_authorized_operations": UNKNOWN_OPS,
    }


# --- Produce -----------------------------------------------------------------------------


async def _produce(node: Node, req: Request) -> dict[str, Any] | None:
    body = req.body
    acks = int(body.acks)
    responses = []
    wrote = False
    for topic in body.topic_data:
        parts = []
        for p in topic.partition_data:
            result: dict[str, Any] = {"index": p.index, "error_code": E.none, "base_offset": -1,
                                      "log_append_time": -1, "log_start_offset": -1}
            state = node.partition(topic.name, p.index)
            if acks not in (0, 1, -1):
                result["error_code"] = E.invalid_required_acks
            elif body.transactional_id is not None:
                result["error_code"] = E.transactional_id_authorization_failed
                result["error_message"] = "transactions are not supported by this broker"
            elif state is None:
                result["error_code"] = E.unknown_topic_or_partition
            elif not p.records:
                result["error_code"] = E.invalid_record
                result["error_message"] = "empty record set"
            elif acks == -1 and int(node.effective_configs(state.topic)["min.insync.replicas"]) > 1:
                result["error_code"] = E.not_enough_replicas
            else:
                try:
                    appended = node.append(state, p.records)
                except Exception as exc:
                    code = _storage_error_code(exc)
                    if code in (E.unknown_server_error, E.kafka_storage_error):
                        log.exception("append to %s-%d failed", topic.name, p.index)
                    else:
                        log.info("rejected produce to %s-%d from %s: %s", topic.name, p.index,
                                 req.client_id, exc)
                    result["error_code"] = code
                    result["error_message"] = str(exc)
                else:
                    wrote = wrote or not appended.duplicate
                    result["base_offset"] = appended.base_offset
                    result["log_start_offset"] = appended.log_start_offset
                    result["log_append_time"] = appended.log_append_time
            parts.append(result)
        responses.append({"name": topic.name, "partition_responses": parts})
    if wrote:
        flushed = node.sync()
        if acks != 0:
            try:
                await flushed
            except Exception:
                for t in responses:
                    for p in t["partition_responses"]:
                        if p["error_code"] == E.none:
                            p["error_code"], p["base_offset"] = E.kafka_storage_error, -1
    if acks == 0:
        return None
    return {"responses": responses, "throttle_time": 0}


# --- Fetch -------------------------------------------------------------------------------


def _resolve_topic(node: Node, t: Any) -> tuple[TopicMeta | None, E]:
    topic_id = getattr(t, "topic_id", None)
    name = getattr(t, "topic", None)
    if name is None and topic_id is not None:
        meta = node.registry.by_id(topic_id)
        return meta, E.none if meta else E.unknown_topic_id
    meta = node.registry.get(name) if name is not None else None
    return meta, E.none if meta else E.unknown_topic_or_partition


def _fetch_partition(node: Node, meta: TopicMeta | None, missing: E, p: Any, budget: int,
                     states: list[PartitionState]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {"partition_index": p.partition, "error_code": E.none, "high_watermark": -1,
                           "last_stable_offset": -1, "log_start_offset": -1, "aborted_transactions": [],
                           "preferred_read_replica": -1, "records": b""}
    state = node.partition(meta.name, p.partition) if meta else None
    if state is None:
        out["error_code"] = missing if meta is None else E.unknown_topic_or_partition
        return out, 0
    plog = state.log
    hw = plog.high_watermark
    out["high_watermark"] = out["last_stable_offset"] = hw
    out["log_start_offset"] = plog.log_start_offset
    epoch = getattr(p, "current_leader_epoch", -1)
    if epoch is not None and epoch >= 0 and epoch != state.leader_epoch:
        out["error_code"] = E.fenced_leader_epoch if epoch < state.leader_epoch else E.unknown_leader_epoch
        return out, 0
    states.append(state)
    if budget <= 0:
        return out, 0
    try:
        read = plog.read(p.fetch_offset, min(p.partition_max_bytes, budget), max_offset=hw)
    except OffsetOutOfRangeError:
        out["error_code"] = E.offset_out_of_range
        return out, 0
    if read.chunks:
        out["records"] = list(read.chunks)
    return out, read.size


async def _fetch(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    loop = asyncio.get_running_loop()
    deadline = loop.time() + millis(body.max_wait) / 1000
    min_bytes = max(0, int(body.min_bytes))
    session_id = int(getattr(body, "session_id", 0) or 0)
    if session_id != 0:
        return {"throttle_time": 0, "error_code": E.fetch_session_id_not_found, "session_id": 0,
                "responses": []}
    while True:
        budget = int(body.max_bytes) if body.max_bytes > 0 else 1 << 62
        total = 0
        errors = False
        states: list[PartitionState] = []
        responses = []
        for t in body.topics:
            meta, missing = _resolve_topic(node, t)
            parts = []
            for p in t.partitions:
                part, size = _fetch_partition(node, meta, missing, p, budget - total, states)
                total += size
                errors = errors or part["error_code"] != E.none
                parts.append(part)
            responses.append({"topic": getattr(t, "topic", None), "topic_id": getattr(t, "topic_id", None),
                              "partitions": parts})
        remaining = deadline - loop.time()
        if total >= min_bytes or errors or remaining <= 0 or not states:
            return {"throttle_time": 0, "error_code": E.none, "session_id": 0, "responses": responses}
        waiters = {s.data_arrived() for s in states}
        await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)


# --- ListOffsets -------------------------------------------------------------------------


async def _list_offsets(node: Node, req: Request) -> dict[str, Any]:
    topics = []
    for t in req.body.topics:
        parts = []
        for p in t.partitions:
            out: dict[str, Any] = {"partition_index": p.partition_index, "error_code": E.none,
                                   "timestamp": -1, "offset": -1, "leader_epoch": -1}
            state = node.partition(t.name, p.partition_index)
            if state is None:
                out["error_code"] = E.unknown_topic_or_partition
                parts.append(out)
                continue
            epoch = getattr(p, "current_leader_epoch", -1)
            if epoch is not None and epoch >= 0 and epoch != state.leader_epoch:
                out["error_code"] = E.fenced_leader_epoch if epoch < state.leader_epoch else E.unknown_leader_epoch
                parts.append(out)
                continue
            plog = state.log
            ts = int(p.timestamp)
            out["leader_epoch"] = state.leader_epoch
            if ts == -1:  # latest
                out["offset"] = plog.high_watermark
            elif ts == -2:  # earliest
                out["offset"] = plog.log_start_offset
            elif ts == -3:  # the record with the largest timestamp
                found = plog.max_timestamp()
                if found is not None:
                    out["offset"], out["timestamp"] = found
            else:
                found = plog.offset_for_timestamp(ts)
                if found is not None and found[0] < plog.high_watermark:
                    out["offset"], out["timestamp"] = found
            parts.append(out)
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}


# --- InitProducerId ----------------------------------------------------------------------


async def _init_producer_id(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    if body.transactional_id is not None:
        return {"throttle_time": 0, "error_code": E.transactional_id_authorization_failed,
                "producer_id": -1, "producer_epoch": -1}
    pid = int(getattr(body, "producer_id", -1))
    epoch = int(getattr(body, "producer_epoch", -1))
    if pid >= 0 and 0 <= epoch < 32766:  # KIP-360: bump the epoch of a known producer
        return {"throttle_time": 0, "error_code": E.none, "producer_id": pid, "producer_epoch": epoch + 1}
    return {"throttle_time": 0, "error_code": E.none, "producer_id": node.allocate_producer_id(),
            "producer_epoch": 0}


# --- CreateTopics / DeleteTopics / CreatePartitions --------------------------------------


def _described_configs(node: Node, meta: TopicMeta) -> list[dict[str, Any]]:
    effective = node.effective_configs(meta)
    return [{"name": name, "value": value, "read_only": False,
             "config_source": 1 if name in meta.configs else 5, "is_sensitive": False}
            for name, value in sorted(effective.items())]


async def _create_topics(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    results = []
    for t in body.topics:
        out: dict[str, Any] = {"name": t.name, "error_code": E.none, "error_message": None,
                               "num_partitions": -1, "replication_factor": -1, "configs": []}
        partitions = int(t.num_partitions)
        rf = int(t.replication_factor)
        assignment = [list(a.broker_ids) for a in sorted(t.assignments, key=lambda a: a.partition_index)]
        try:
            check_topic_name(t.name)
            if t.name in node.registry:
                raise TopicExistsError(f"topic {t.name!r} already exists")
            if assignment:
                if partitions != -1 or rf != -1:
                    raise _Refused(E.invalid_request, "give either assignments or partitions and replication factor")
                if len({len(a) for a in assignment}) != 1 or any(len(set(a)) != len(a) for a in assignment):
                    raise _Refused(E.invalid_replica_assignment, "every partition needs the same number of distinct replicas")
                unknown = {b for a in assignment for b in a} - set(node.cluster_nodes())
                if unknown:
                    raise _Refused(E.invalid_replica_assignment, f"unknown broker ids {sorted(unknown)}")
            else:
                if partitions == -1:
                    partitions = node.config.setting_int("num.partitions")
                if rf == -1:
                    rf = node.config.setting_int("default.replication.factor")
                if partitions < 1:
                    raise _Refused(E.invalid_partitions, f"number of partitions must be at least 1, got {partitions}")
                if not 1 <= rf <= len(node.cluster_nodes()):
                    raise _Refused(E.invalid_replication_factor,
                                   f"replication factor {rf} is larger than the {len(node.cluster_nodes())} available broker(s)"
                                   if rf > 0 else f"replication factor must be at least 1, got {rf}")
            configs = {c.name: c.value for c in t.configs}
            meta = node.create_topic(t.name, partitions, rf, configs, assignment or None,
                                     validate_only=bool(body.validate_only))
        except _Refused as exc:
            out["error_code"], out["error_message"] = exc.code, exc.message
        except TopicExistsError as exc:
            out["error_code"], out["error_message"] = E.topic_already_exists, str(exc)
        except InvalidTopicError as exc:
            out["error_code"], out["error_message"] = E.invalid_topic_exception, str(exc)
        except ConfigError as exc:
            out["error_code"], out["error_message"] = E.invalid_config, str(exc)
        else:
            if meta is not None:
                out.update(num_partitions=meta.partition_count, replication_factor=meta.replication_factor,
                           configs=_described_configs(node, meta), topic_id=meta.topic_id)
            else:
                out.update(num_partitions=len(assignment) or partitions,
                           replication_factor=len(assignment[0]) if assignment else rf)
        results.append(out)
    return {"throttle_time": 0, "topics": results}


class _Refused(Exception):
    def __init__(self, code: E, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


async def _delete_topics(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    if req.api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(name, None) for name in body.topic_names]
    responses = []
    for name, topic_id in wanted:
        meta = node.registry.get(name) if name is not None else (
            node.registry.by_id(topic_id) if topic_id is not None else None)
        out: dict[str, Any] = {"name": name, "topic_id": topic_id, "error_code": E.none, "error_message": None}
        if meta is None:
            out["error_code"] = E.unknown_topic_id if name is None else E.unknown_topic_or_partition
        elif meta.internal:
            out["error_code"], out["error_message"] = E.invalid_request, f"{meta.name} is an internal topic"
        else:
            node.delete_topic(meta.name)
            out.update(name=meta.name, topic_id=meta.topic_id)
        responses.append(out)
    return {"throttle_time": 0, "responses": responses}


async def _create_partitions(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    results = []
    for t in body.topics:
        out: dict[str, Any] = {"name": t.name, "error_code": E.none, "error_message": None}
        meta = node.registry.get(t.name)
        assignment = [list(a.broker_ids) for a in t.assignments] if t.assignments else None
        if meta is None:
            out["error_code"] = E.unknown_topic_or_partition
        elif t.count <= meta.partition_count:
            out["error_code"] = E.invalid_partitions
            out["error_message"] = f"topic {t.name} has {meta.partition_count} partitions; the new count must be larger, got {t.count}"
        elif assignment is not None and len(assignment) != t.count - meta.partition_count:
            out["error_code"] = E.invalid_replica_assignment
            out["error_message"] = f"expected {t.count - meta.partition_count} assignments, got {len(assignment)}"
        elif not body.validate_only:
            try:
                node.add_partitions(t.name, t.count, assignment)
            except ValueError as exc:
                out["error_code"], out["error_message"] = E.invalid_replica_assignment, str(exc)
        results.append(out)
    return {"throttle_time": 0, "results": results}


# --- DescribeConfigs ---------------------------------------------------------------------

_TOPIC_RESOURCE, _BROKER_RESOURCE = 2, 4
_CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "long": 5, "double": 6, "list": 7}


async def _describe_configs(node: Node, req: Request) -> dict[str, Any]:
    body = req.body
    results = []
    for r in body.resources:
        out: dict[str, Any] = {"error_code": E.none, "error_message": None,
                               "resource_type": r.resource_type, "resource_name": r.resource_name,
                               "configs": []}
        keys = set(r.configuration_keys) if r.configuration_keys is not None else None
        if r.resource_type == _TOPIC_RESOURCE:
            meta = node.registry.get(r.resource_name)
            if meta is None:
                out["error_code"] = E.unknown_topic_or_partition
                out["error_message"] = f"topic {r.resource_name!r} does not exist"
            else:
                effective = node.effective_configs(meta)
                for name, value in sorted(effective.items()):
                    if keys is not None and name not in keys:
                        continue
                    source = 1 if name in meta.configs else 5
                    definition = TOPIC_CONFIGS[name]
                    out["configs"].append({
                        "name": name, "value": value, "read_only": False, "config_source": source,
                        "is_sensitive": False, "synonyms": [], "config_type": _CONFIG_TYPES[definition.kind],
                        "documentation": definition.doc if getattr(body, "include_documentation", False) else None,
                    })
        elif r.resource_type == _BROKER_RESOURCE:
            if r.resource_name not in ("", str(node.node_id)):
                out["error_code"] = E.invalid_request
                out["error_message"] = f"this is broker {node.node_id}, not {r.resource_name}"
            else:
                for name, value in sorted(node.config.settings.items()):
                    if keys is None or name in keys:
                        out["configs"].append({"name": name, "value": value, "read_only": True,
                                               "config_source": 4, "is_sensitive": False,
                                               "synonyms": [], "config_type": 2, "documentation": None})
        else:
            out["error_code"] = E.invalid_request
            out["error_message"] = f"resource type {r.resource_type} is not supported"
        results.append(out)
    return {"throttle_time": 0, "results": results}


# --- AlterConfigs / IncrementalAlterConfigs ----------------------------------------------

_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3


def _alter_topic_configs(node: Node, r: Any, incremental: bool, validate_only: bool) -> tuple[E, str | None]:
    if r.resource_type != _TOPIC_RESOURCE:
        return E.invalid_request, "only topic configs can be changed while the broker runs"
    meta = node.registry.get(r.resource_name)
    if meta is None:
        return E.unknown_topic_or_partition, f"topic {r.resource_name!r} does not exist"
    configs = dict(meta.configs) if incremental else {}
    for c in r.configs:
        if c.name not in TOPIC_CONFIGS:
            return E.invalid_config, f"unknown topic config {c.name!r}"
        op = getattr(c, "config_operation", _SET)
        if op == _SET:
            configs[c.name] = c.value
        elif op == _DELETE:
            configs.pop(c.name, None)
        elif op in (_APPEND, _SUBTRACT) and TOPIC_CONFIGS[c.name].kind == "list":
            current = node.effective_configs(meta)[c.name].split(",")
            items = [v for v in (c.value or "").split(",") if v]
            if op == _APPEND:
                current += [v for v in items if v not in current]
            else:
                current = [v for v in current if v not in items]
            configs[c.name] = ",".join(v for v in current if v)
        else:
            return E.invalid_config, f"operation {op} does not apply to {c.name!r}"
    try:
        checked = {k: v for k, v in configs.items() if v is not None}
        if not validate_only:
            node.alter_configs(meta.name, checked)
        else:
            validate_topic_configs(checked)
    except ConfigError as exc:
        return E.invalid_config, str(exc)
    return E.none, None


async def _alter_configs(node: Node, req: Request) -> dict[str, Any]:
    incremental = req.api_key == 44
    responses = []
    for r in req.body.resources:
        code, message = _alter_topic_configs(node, r, incremental, bool(req.body.validate_only))
        responses.append({"error_code": code, "error_message": message,
                          "resource_type": r.resource_type, "resource_name": r.resource_name})
    return {"throttle_time": 0, "responses": responses}


HANDLERS: dict[int, Handler] = {
    0: _produce,
    1: _fetch,
    2: _list_offsets,
    3: _metadata,
    18: _api_versions,
    19: _create_topics,
    20: _delete_topics,
    22: _init_producer_id,
    32: _describe_configs,
    33: _alter_configs,
    37: _create_partitions,
    44: _alter_configs,
}

SUPPORTED: dict[int, tuple[int, int]] = {
    0: (3, 9),
    1: (4, 16),
    2: (1, 7),
    3: (0, 12),
    18: (0, 3),
    19: (2, 5),
    20: (1, 6),
    22: (0, 4),
    32: (1, 4),
    33: (0, 2),
    37: (0, 3),
    44: (0, 1),
}


SUPPORTED.update(GROUP_VERSIONS)
