"""Group metadata and committed offsets, kept in the compacted ``__consumer_offsets`` topic.

Like Kafka, every commit and every new generation is a record keyed by what it describes
(``offset`` + group + topic + partition, or ``group`` + group), so compaction keeps the
latest of each and a deleted group leaves tombstones. Keys and values are JSON: the topic
is Vigil's own business, readable with any Kafka consumer for debugging. A broker that
starts replays the topic to rebuild every group.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from typing import Any

from broker._coordinator import Group, GroupState, GroupStore, Member, OffsetEntry
from broker._node import Node, PartitionState
from broker._records import Record, decode_batches, encode_batch

__all__ = ["OFFSETS_TOPIC", "LogGroupStore", "load_groups"]

log = logging.getLogger("vigil.broker")

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": str(100 * 1024 * 1024)}


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    return json.dumps(["offset", group_id, topic, partition], separators=(",", ":")).encode()


def group_key(group_id: str) -> bytes:
    return json.dumps(["group", group_id], separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def group_value(group: Group) -> bytes:
    return json.dumps({
        "protocol_type": group.protocol_type, "protocol": group.protocol, "generation": group.generation,
        "leader": group.leader, "state": group.state.value, "empty_since_ms": group.empty_since_ms,
        "members": [{
            "member_id": m.member_id, "group_instance_id": m.group_instance_id,
            "client_id": m.client_id, "client_host": m.client_host,
            "session_timeout_ms": m.session_timeout_ms, "rebalance_timeout_ms": m.rebalance_timeout_ms,
            "protocol_type": m.protocol_type,
            "protocols": [[name, _b64(meta)] for name, meta in m.protocols],
            "assignment": _b64(m.assignment),
        } for m in group.members.values()],
    }, separators=(",", ":")).encode()


def offset_value(entry: OffsetEntry) -> bytes:
    return json.dumps({"offset": entry.offset, "leader_epoch": entry.leader_epoch,
                       "metadata": entry.metadata, "commit_ms": entry.commit_ms},
                      separators=(",", ":")).encode()


def apply_record(groups: dict[str, Group], key: bytes | None, value: bytes | None) -> None:
    """Replay one record of the offsets topic into ``groups``."""
    if key is None:
        return
    parsed = json.loads(key)
    kind, group_id = parsed[0], parsed[1]
    group = groups.get(group_id)
    if kind == "offset":
        tp = (parsed[2], int(parsed[3]))
        if value is None:
            if group is not None:
                group.offsets.pop(tp, None)
            return
        if group is None:
            group = groups[group_id] = Group(group_id)
        v = json.loads(value)
        group.offsets[tp] = OffsetEntry(v["offset"], v["leader_epoch"], v["metadata"], v["commit_ms"])
    elif kind == "group":
        if value is None:
            groups.pop(group_id, None)
            return
        if group is None:
            group = groups[group_id] = Group(group_id)
        v = json.loads(value)
        group.protocol_type = v["protocol_type"]
        group.protocol = v["protocol"]
        group.generation = v["generation"]
        group.leader = v["leader"]
        group.empty_since_ms = v.get("empty_since_ms", int(time.time() * 1000))
        group.members = {}
        group.static = {}
        for m in v["members"]:
            member = Member(
                m["member_id"], m["group_instance_id"], m["client_id"], m["client_host"],
                m["session_timeout_ms"], m["rebalance_timeout_ms"], m["protocol_type"],
                [(name, base64.b64decode(meta)) for name, meta in m["protocols"]],
                assignment=base64.b64decode(m["assignment"]),
            )
            group.members[member.member_id] = member
            if member.group_instance_id is not None:
                group.static[member.group_instance_id] = member.member_id
        # Members carry on where they were: those that keep heartbeating see no rebalance,
        # the others time out as usual.
        group.state = GroupState.STABLE if group.members and v["state"] == "Stable" else (
            GroupState.EMPTY if not group.members else GroupState.STABLE)


def load_groups(node: Node) -> dict[str, Group]:
    """Rebuild every group from the offsets topic (called once at start)."""
    groups: dict[str, Group] = {}
    records = 0
    for (topic, _), state in sorted(node.partitions.items()):
        if topic != OFFSETS_TOPIC:
            continue
        plog = state.log
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            read = plog.read(offset, 8 << 20)
            if not read.chunks:
                break
            blob = b"".join(bytes(c) for c in read.chunks)
            for header, batch_records in decode_batches(blob):
                for record in batch_records:
                    if record.offset >= offset:
                        apply_record(groups, record.key, record.value)
                        records += 1
                offset = max(offset, header.base_offset + header.last_offset_delta + 1)
    if groups:
        log.info("loaded %d group(s) from %d record(s) of %s", len(groups), records, OFFSETS_TOPIC)
    return groups


class LogGroupStore(GroupStore):
    def __init__(self, node: Node, partitions: int) -> None:
        self.node = node
        meta = node.registry.get(OFFSETS_TOPIC)
        if meta is None:
            meta = node.create_topic(OFFSETS_TOPIC, partitions, 1, dict(OFFSETS_TOPIC_CONFIGS), internal=True)
            assert meta is not None
        self.partitions = meta.partition_count

    def _partition(self, group_id: str) -> PartitionState:
        index = zlib.crc32(group_id.encode()) % self.partitions
        state = self.node.partition(OFFSETS_TOPIC, index)
        if state is None:
            raise RuntimeError(f"{OFFSETS_TOPIC} partition {index} is not hosted here")
        return state

    async def _write(self, group_id: str, items: list[tuple[bytes, bytes | None]]) -> None:
        now = int(time.time() * 1000)
        records = [Record(offset=i, timestamp=now, key=k, value=v) for i, (k, v) in enumerate(items)]
        self.node.append(self._partition(group_id), encode_batch(records, base_offset=0))
        await self.node.sync()

    async def save_group(self, group: Group) -> None:
        await self._write(group.group_id, [(group_key(group.group_id), group_value(group))])

    async def save_offsets(self, group: Group, offsets: dict[tuple[str, int], OffsetEntry]) -> None:
        await self._write(group.group_id, [(offset_key(group.group_id, t, p), offset_value(e))
                                           for (t, p), e in offsets.items()])

    async def delete_group(self, group: Group) -> None:
        items: list[tuple[bytes, bytes | None]] = [
            (offset_key(group.group_id, t, p), None) for t, p in group.offsets]
        items.append((group_key(group.group_id), None))
        await self._write(group.group_id, items)


def describe_members(group: Group) -> list[dict[str, Any]]:
    protocol = group.protocol or ""
    return [{"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
             "client_host": m.client_host, "member_metadata": m.metadata_for(protocol),
             "member_assignment": m.assignment} for m in group.members.values()]
