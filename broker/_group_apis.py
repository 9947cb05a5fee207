"""The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups.

Request bodies (kio entities) in, response dicts out; the rules live in ``_coordinator``.
"""

from __future__ import annotations

import time
from typing import Any

from kio.schema.errors import ErrorCode as E

from broker._codec import UNKNOWN_OPS, Request, millis
from broker._coordinator import Coordinator, OffsetEntry
from broker._group_store import describe_members
from broker._node import Node

__all__ = ["GROUP_HANDLERS", "GROUP_VERSIONS", "GroupContext"]



class GroupContext:
    """What the group handlers need: the node (for topics) and the coordinator."""

    def __init__(self, node: Node, coordinator: Coordinator) -> None:
        self.node = node
        self.coordinator = coordinator




async def _find_coordinator(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    cfg = ctx.node.config
    if getattr(body, "key_type", 0) != 0:
        return {"throttle_time": 0, "error_code": E.coordinator_not_available,
                "error_message": "transactions are not supported by this broker",
                "node_id": -1, "host": "", "port": -1}
    return {"throttle_time": 0, "error_code": E.none, "error_message": None, "node_id": ctx.node.node_id,
            "host": cfg.advertised_host, "port": cfg.advertised_port}


async def _join_group(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    session = millis(body.session_timeout)
    rebalance = millis(getattr(body, "rebalance_timeout", session))
    result = await ctx.coordinator.join(
        group_id=body.group_id, member_id=body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        client_id=req.client_id or "", client_host=req.peer_host,
        session_timeout_ms=session, rebalance_timeout_ms=rebalance if rebalance > 0 else session,
        protocol_type=body.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in body.protocols],
        require_known_member_id=req.api_version >= 4,
    )
    return {"throttle_time": 0, **result}


async def _sync_group(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    result = await ctx.coordinator.sync(
        group_id=body.group_id, member_id=body.member_id, generation=body.generation_id,
        instance_id=getattr(body, "group_instance_id", None),
        assignments={a.member_id: bytes(a.assignment) for a in body.assignments},
    )
    return {"throttle_time": 0, "protocol_type": None, "protocol_name": None, **result}


async def _heartbeat(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    error = ctx.coordinator.heartbeat(group_id=body.group_id, member_id=body.member_id,
                                      generation=body.generation_id,
                                      instance_id=getattr(body, "group_instance_id", None))
    return {"throttle_time": 0, "error_code": error}


async def _leave_group(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    if req.api_version >= 3:
        leaving = [(m.member_id, m.group_instance_id) for m in body.members]
    else:
        leaving = [(body.member_id, None)]
    error, members = ctx.coordinator.leave(body.group_id, leaving)
    if req.api_version >= 3:
        error = E.none if ctx.coordinator.describe(body.group_id) or members else error
    return {"throttle_time": 0, "error_code": error, "members": members}


async def _offset_commit(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    generation = getattr(body, "generation_id_or_member_epoch", getattr(body, "generation_id", -1))
    group, error = ctx.coordinator.check_commit(body.group_id, body.member_id, generation,
                                                getattr(body, "group_instance_id", None))
    now = int(time.time() * 1000)
    offsets: dict[tuple[str, int], OffsetEntry] = {}
    topics = []
    for t in body.topics:
        parts = []
        for p in t.partitions:
            code = error
            if code is E.none:
                metadata = p.committed_metadata
                if ctx.node.partition(t.name, p.partition_index) is None:
                    code = E.unknown_topic_or_partition
                elif metadata is not None and len(metadata.encode()) > 4096:
                    code = E.offset_metadata_too_large
                else:
                    offsets[(t.name, p.partition_index)] = OffsetEntry(
                        int(p.committed_offset), int(getattr(p, "committed_leader_epoch", -1)),
                        metadata, now)
            parts.append({"partition_index": p.partition_index, "error_code": code})
        topics.append({"name": t.name, "partitions": parts})
    if offsets:
        try:
            await ctx.coordinator.commit(group, offsets)
        except Exception:
            for t in topics:
                for p in t["partitions"]:
                    if p["error_code"] is E.none:
                        p["error_code"] = E.coordinator_not_available
    return {"throttle_time": 0, "topics": topics}


async def _offset_fetch(ctx: GroupContext, req: Request) -> dict[str, Any]:
    body = req.body
    wanted = None if body.topics is None else [(t.name, i) for t in body.topics for i in t.partition_indexes]
    found = ctx.coordinator.fetch_offsets(body.group_id, wanted)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), entry in sorted(found.items()):
        part: dict[str, Any] = {"partition_index": partition, "committed_offset": -1,
                                "committed_leader_epoch": -1, "metadata": "", "error_code": E.none}
        if entry is not None:
            part.update(committed_offset=entry.offset, committed_leader_epoch=entry.leader_epoch,
                        metadata=entry.metadata)
        elif wanted is not None and ctx.node.partition(topic, partition) is None:
            part["error_code"] = E.unknown_topic_or_partition
        by_topic.setdefault(topic, []).append(part)
    # require_stable (v7) needs no check: offsets are committed synchronously, so what is
    # here is always stable.
    return {"throttle_time": 0, "error_code": E.none,
            "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()]}


async def _list_groups(ctx: GroupContext, req: Request) -> dict[str, Any]:
    states = set(getattr(req.body, "states_filter", None) or [])
    groups = []
    for group in ctx.coordinator.groups.values():
        if states and group.state.value not in states:
            continue
        groups.append({"group_id": group.group_id, "protocol_type": group.protocol_type or "",
                       "group_state": group.state.value})
    return {"throttle_time": 0, "error_code": E.none, "groups": groups}


async def _describe_groups(ctx: GroupContext, req: Request) -> dict[str, Any]:
    out = []
    for group_id in req.body.groups:
        group = ctx.coordinator.describe(group_id)
        if group is None:
            out.append({"error_code": E.none, "group_id": group_id, "group_state": "Dead",
                        "protocol_type": "", "protocol_data": "", "members": [],
                        "authorized_operations": UNKNOWN_OPS})
            continue
        out.append({"error_code": E.none, "group_id": group_id, "group_state": group.state.value,
                    "protocol_type": group.protocol_type or "", "protocol_data": group.protocol or "",
                    "members": describe_members(group), "authorized_operations": UNKNOWN_OPS})
    return {"throttle_time": 0, "groups": out}


async def _delete_groups(ctx: GroupContext, req: Request) -> dict[str, Any]:
    results = []
    for group_id in req.body.groups_names:
        results.append({"group_id": group_id, "error_code": await ctx.coordinator.delete_group(group_id)})
    return {"throttle_time": 0, "results": results}


GROUP_HANDLERS = {
    8: _offset_commit,
    9: _offset_fetch,
    10: _find_coordinator,
    11: _join_group,
    12: _heartbeat,
    13: _leave_group,
    14: _sync_group,
    15: _describe_groups,
    16: _list_groups,
    42: _delete_groups,
}

GROUP_VERSIONS: dict[int, tuple[int, int]] = {
    8: (2, 8),
    9: (1, 7),
    10: (0, 3),
    11: (0, 7),
    12: (0, 4),
    13: (0, 4),
    14: (0, 5),
    15: (0, 5),
    16: (0, 4),
    42: (0, 2),
}
