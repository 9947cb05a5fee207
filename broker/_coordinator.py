"""The group coordinator of Kafka's classic consumer-group protocol.

A group moves through Empty → PreparingRebalance → CompletingRebalance → Stable, as in
Kafka. Assignment strategies run in the clients: the coordinator picks the protocol all
members support, hands the leader the members' subscriptions, and relays the leader's
assignment to everyone. Members that stop heartbeating for their session timeout, or do
not rejoin within the rebalance timeout, are removed. A static member
(``group.instance.id``) that restarts takes its old place without a rebalance.

This module keeps the state and the rules; it persists through the ``GroupStore`` it is
given (the ``__consumer_offsets`` topic) and knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode as E

__all__ = ["Coordinator", "Group", "GroupState", "Member", "OffsetEntry"]

log = logging.getLogger("vigil.broker")

MIN_SESSION_TIMEOUT_MS = 6000
MAX_SESSION_TIMEOUT_MS = 1_800_000
MAX_METADATA_BYTES = 4096


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    last_seen: float = field(default_factory=time.monotonic)
    join_waiter: asyncio.Future[dict[str, Any]] | None = None
    sync_waiter: asyncio.Future[dict[str, Any]] | None = None

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""


@dataclass(frozen=True, slots=True)
class OffsetEntry:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_ms: int


@dataclass(eq=False)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # ids handed out by MEMBER_ID_REQUIRED
    static: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    offsets: dict[tuple[str, int], OffsetEntry] = field(default_factory=dict)
    rebalance_deadline: float = 0.0
    empty_since_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def all_rejoined(self) -> bool:
        return all(m.join_waiter is not None for m in self.members.values())

    def choose_protocol(self) -> str | None:
        if not self.members:
            return None
        common: set[str] | None = None
        for m in self.members.values():
            names = {name for name, _ in m.protocols}
            common = names if common is None else common & names
        if not common:
            return None
        votes: dict[str, int] = {}
        for m in self.members.values():
            for name, _ in m.protocols:
                if name in common:
                    votes[name] = votes.get(name, 0) + 1
                    break
        return max(sorted(votes), key=lambda n: votes[n])

    def supports(self, protocol_type: str, protocols: Iterable[tuple[str, bytes]]) -> bool:
        if not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        names = {name for name, _ in protocols}
        return all(names & {n for n, _ in m.protocols} for m in self.members.values())


class GroupStore:
    """Where the coordinator persists group metadata and committed offsets."""

    async def save_group(self, group: Group) -> None:
        raise NotImplementedError

    async def save_offsets(self, group: Group, offsets: dict[tuple[str, int], OffsetEntry]) -> None:
        raise NotImplementedError

    async def delete_group(self, group: Group) -> None:
        raise NotImplementedError


class Coordinator:
    def __init__(self, store: GroupStore, *, initial_rebalance_delay_ms: int = 0,
                 offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.groups: dict[str, Group] = {}
        self.initial_delay = initial_rebalance_delay_ms / 1000
        self.offsets_retention_ms = offsets_retention_ms
        self.clock = clock
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- JoinGroup ------------------------------------------------------------------------

    async def join(self, *, group_id: str, member_id: str, group_instance_id: str | None,
                   client_id: str, client_host: str, session_timeout_ms: int,
                   rebalance_timeout_ms: int, protocol_type: str,
                   protocols: list[tuple[str, bytes]], require_known_member_id: bool) -> dict[str, Any]:
        if not group_id:
            return _join_error(E.invalid_group_id, member_id)
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return _join_error(E.invalid_session_timeout, member_id)
        group = self.groups.get(group_id)
        if group is None:
            if member_id:
                return _join_error(E.unknown_member_id, member_id)
            group = self.groups[group_id] = Group(group_id)
        if not group.supports(protocol_type, protocols):
            return _join_error(E.inconsistent_group_protocol, member_id)
        now = self.clock()

        if not member_id:
            if group_instance_id is not None and group_instance_id in group.static:
                return await self._rejoin_static(group, group_instance_id, client_id, client_host,
                                                 session_timeout_ms, rebalance_timeout_ms,
                                                 protocol_type, protocols)
            new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            if require_known_member_id and group_instance_id is None:
                group.pending[new_id] = now + session_timeout_ms / 1000
                return _join_error(E.member_id_required, new_id)
            member_id = new_id
        elif member_id not in group.members and member_id not in group.pending:
            return _join_error(E.unknown_member_id, member_id)
        elif (group_instance_id is not None and member_id in group.members
              and group.static.get(group_instance_id) != member_id):
            return _join_error(E.fenced_instance_id, member_id)

        group.pending.pop(member_id, None)
        member = group.members.get(member_id)
        if member is None:
            member = Member(member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                            rebalance_timeout_ms, protocol_type, list(protocols))
            group.members[member_id] = member
            if group_instance_id is not None:
                group.static[group_instance_id] = member_id
            if group.protocol_type is None:
                group.protocol_type = protocol_type
            self._prepare_rebalance(group, f"member {member_id} joined")
        else:
            changed = member.protocols != list(protocols)
            member.protocols = list(protocols)
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.last_seen = now
            if group.state is GroupState.STABLE and not changed and member_id != group.leader:
                return self._join_response(group, member)  # nothing to do: same generation
            if group.state is GroupState.COMPLETING_REBALANCE and not changed:
                return self._join_response(group, member)
            if group.state is not GroupState.PREPARING_REBALANCE:
                self._prepare_rebalance(group, f"member {member_id} rejoined")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if member.join_waiter is not None and not member.join_waiter.done():
            member.join_waiter.set_result(_join_error(E.unknown_member_id, member_id))
        member.join_waiter = waiter
        member.last_seen = now
        self._maybe_complete_join(group)
        return await waiter

    async def _rejoin_static(self, group: Group, instance_id: str, client_id: str, client_host: str,
                             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                             protocols: list[tuple[str, bytes]]) -> dict[str, Any]:
        """A restarted static member: replace its old member id, keep its partitions."""
        old_id = group.static[instance_id]
        old = group.members.pop(old_id, None)
        new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
        member = Member(new_id, instance_id, client_id, client_host, session_timeout_ms,
                        rebalance_timeout_ms, protocol_type, list(protocols),
                        assignment=old.assignment if old else b"")
        group.members[new_id] = member
        group.static[instance_id] = new_id
        if old is not None:
            for stale in (old.join_waiter, old.sync_waiter):
                if stale is not None and not stale.done():
                    stale.set_result(_join_error(E.fenced_instance_id, old_id))
        was_leader = group.leader == old_id
        if was_leader:
            group.leader = new_id
        # As Kafka: no rebalance unless the protocol the group would now choose changes
        # (metadata bytes may differ after a restart, e.g. a client listing what it owns).
        same = old is not None and group.protocol is not None and group.choose_protocol() == group.protocol
        if group.state is GroupState.STABLE and same:
            log.info("group %s: static member %s rejoined as %s without a rebalance",
                     group.group_id, instance_id, new_id)
            await self.store.save_group(group)
            response = self._join_response(group, member)
            if was_leader:
                # As Kafka does: answer with the old leader id, so the restarted leader does
                # not compute an assignment that a stable group would never hand out.
                response.update(leader=old_id, members=[])
            return response
        self._prepare_rebalance(group, f"static member {instance_id} rejoined")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        member.join_waiter = waiter
        self._maybe_complete_join(group)
        return await waiter

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            for m in group.members.values():  # the sync round is void: everyone rejoins
                if m.sync_waiter is not None and not m.sync_waiter.done():
                    m.sync_waiter.set_result({"error_code": E.rebalance_in_progress, "assignment": b""})
                m.sync_waiter = None
        first = group.state is GroupState.EMPTY
        group.state = GroupState.PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0) / 1000
        delay = self.initial_delay if first else timeout
        group.rebalance_deadline = self.clock() + delay
        log.info("group %s preparing to rebalance: %s", group.group_id, reason)
        self._schedule(group, delay)

    def _schedule(self, group: Group, delay: float) -> None:
        old = self._timers.pop(group.group_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[group.group_id] = loop.call_later(max(delay, 0.0), self._on_deadline, group)

    def _on_deadline(self, group: Group) -> None:
        self._timers.pop(group.group_id, None)
        if group.state is GroupState.PREPARING_REBALANCE:
            for member_id, m in list(group.members.items()):
                if m.join_waiter is None:
                    log.info("group %s: member %s did not rejoin in time, removing it",
                             group.group_id, member_id)
                    self._remove(group, member_id)
            self._complete_join(group)
        elif group.state is GroupState.COMPLETING_REBALANCE:
            # the leader never sent its assignment: start over
            for m in group.members.values():
                if m.sync_waiter is not None and not m.sync_waiter.done():
                    m.sync_waiter.set_result({"error_code": E.rebalance_in_progress, "assignment": b""})
                m.sync_waiter = None
            if group.leader is not None:
                self._remove(group, group.leader)
            if group.members:
                self._prepare_rebalance(group, "the leader did not send an assignment in time")
            else:
                self._become_empty(group)

    def _maybe_complete_join(self, group: Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE or not group.all_rejoined():
            return
        if self.clock() < group.rebalance_deadline and group.generation == 0 and self.initial_delay:
            return  # first join of a new group waits group.initial.rebalance.delay.ms
        self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        old = self._timers.pop(group.group_id, None)
        if old is not None:
            old.cancel()
        if not group.members:
            self._become_empty(group)
            return
        group.generation += 1
        group.protocol = group.choose_protocol()
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = GroupState.COMPLETING_REBALANCE
        log.info("group %s generation %d: %d member(s), protocol %s, leader %s", group.group_id,
                 group.generation, len(group.members), group.protocol, group.leader)
        for m in group.members.values():
            waiter, m.join_waiter = m.join_waiter, None
            m.assignment = b""
            if waiter is not None and not waiter.done():
                waiter.set_result(self._join_response(group, m))
        timeout = max(m.rebalance_timeout_ms for m in group.members.values()) / 1000
        self._schedule(group, timeout)

    def _join_response(self, group: Group, member: Member) -> dict[str, Any]:
        protocol = group.protocol or ""
        members = []
        if member.member_id == group.leader:
            members = [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                        "metadata": m.metadata_for(protocol)} for m in group.members.values()]
        return {"error_code": E.none, "generation_id": group.generation,
                "protocol_type": group.protocol_type, "protocol_name": protocol,
                "leader": group.leader or "", "member_id": member.member_id, "members": members}

    def _become_empty(self, group: Group) -> None:
        group.state = GroupState.EMPTY
        group.leader = None
        group.protocol = None
        group.generation += 1
        group.empty_since_ms = int(time.time() * 1000)
        asyncio.get_running_loop().create_task(self._save_quietly(group))

    async def _save_quietly(self, group: Group) -> None:
        try:
            await self.store.save_group(group)
        except Exception:
            log.exception("could not persist group %s", group.group_id)

    def _remove(self, group: Group, member_id: str) -> None:
        member = group.members.pop(member_id, None)
        if member is None:
            return
        if member.group_instance_id is not None and group.static.get(member.group_instance_id) == member_id:
            del group.static[member.group_instance_id]
        for waiter in (member.join_waiter, member.sync_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(_join_error(E.unknown_member_id, member_id))
        if group.leader == member_id:
            group.leader = None

    # -- SyncGroup / Heartbeat / LeaveGroup -------------------------------------------------

    def _check_member(self, group: Group | None, member_id: str, generation: int,
                      instance_id: str | None = None) -> E:
        if group is None or member_id not in group.members:
            return E.unknown_member_id
        if instance_id is not None and group.static.get(instance_id) != member_id:
            return E.fenced_instance_id
        if generation != group.generation:
            return E.illegal_generation
        return E.none

    async def sync(self, *, group_id: str, member_id: str, generation: int, instance_id: str | None,
                   assignments: dict[str, bytes]) -> dict[str, Any]:
        group = self.groups.get(group_id)
        error = self._check_member(group, member_id, generation, instance_id)
        if error is not E.none or group is None:
            return {"error_code": error, "assignment": b""}
        member = group.members[member_id]
        member.last_seen = self.clock()
        base = {"protocol_type": group.protocol_type, "protocol_name": group.protocol}
        if group.state is GroupState.PREPARING_REBALANCE:
            return {**base, "error_code": E.rebalance_in_progress, "assignment": b""}
        if group.state is GroupState.STABLE:
            return {**base, "error_code": E.none, "assignment": member.assignment}
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        member.sync_waiter = waiter
        if member_id == group.leader:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            try:
                await self.store.save_group(group)
            except Exception:
                log.exception("could not persist group %s", group.group_id)
                for m in group.members.values():
                    if m.sync_waiter is not None and not m.sync_waiter.done():
                        m.sync_waiter.set_result({"error_code": E.coordinator_not_available, "assignment": b""})
                    m.sync_waiter = None
                self._prepare_rebalance(group, "could not persist the assignment")
                return await waiter
            if group.state is GroupState.COMPLETING_REBALANCE and group.generation == generation:
                old = self._timers.pop(group.group_id, None)
                if old is not None:
                    old.cancel()
                group.state = GroupState.STABLE
                log.info("group %s generation %d is stable", group.group_id, group.generation)
                for m in group.members.values():
                    if m.sync_waiter is not None and not m.sync_waiter.done():
                        m.sync_waiter.set_result({**base, "error_code": E.none, "assignment": m.assignment})
                    m.sync_waiter = None
        return await waiter

    def heartbeat(self, *, group_id: str, member_id: str, generation: int, instance_id: str | None) -> E:
        group = self.groups.get(group_id)
        error = self._check_member(group, member_id, generation, instance_id)
        if error is not E.none or group is None:
            return error
        group.members[member_id].last_seen = self.clock()
        if group.state is GroupState.PREPARING_REBALANCE:
            return E.rebalance_in_progress
        return E.none

    def leave(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[E, list[dict[str, Any]]]:
        group = self.groups.get(group_id)
        if group is None:
            return E.unknown_member_id, [{"member_id": m, "group_instance_id": i, "error_code": E.unknown_member_id}
                                         for m, i in members]
        results: list[dict[str, Any]] = []
        removed = 0
        for member_id, instance_id in members:
            if not member_id and instance_id is not None:
                member_id = group.static.get(instance_id, "")
            error = E.none
            if member_id not in group.members:
                error = E.unknown_member_id
            elif instance_id is not None and group.static.get(instance_id) != member_id:
                error = E.fenced_instance_id
            else:
                self._remove(group, member_id)
                removed += 1
                log.info("group %s: member %s left", group.group_id, member_id)
            results.append({"member_id": member_id, "group_instance_id": instance_id, "error_code": error})
        if removed:
            self._after_departure(group, "a member left")
        top: E = results[0]["error_code"] if len(results) == 1 else E.none
        return top, results

    def _after_departure(self, group: Group, reason: str) -> None:
        if not group.members:
            old = self._timers.pop(group.group_id, None)
            if old is not None:
                old.cancel()
            self._become_empty(group)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group, reason)

    def expire_members(self) -> None:
        """Remove members whose session timed out (called periodically)."""
        now = self.clock()
        for group in list(self.groups.values()):
            for member_id, until in list(group.pending.items()):
                if until < now:
                    del group.pending[member_id]
            expired = [mid for mid, m in group.members.items()
                       if m.join_waiter is None and m.sync_waiter is None
                       and now - m.last_seen > m.session_timeout_ms / 1000]
            for member_id in expired:
                log.info("group %s: member %s session timed out", group.group_id, member_id)
                self._remove(group, member_id)
            if expired:
                self._after_departure(group, "a member's session timed out")

    # -- offsets ----------------------------------------------------------------------------

    def check_commit(self, group_id: str, member_id: str, generation: int,
                     instance_id: str | None) -> tuple[Group, E]:
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)
        if generation < 0 and not member_id:  # a standalone (assign-only) consumer
            if group.members:
                return group, E.illegal_generation
            return group, E.none
        error = self._check_member(group, member_id, generation, instance_id)
        if error is E.none and group.state is GroupState.COMPLETING_REBALANCE:
            return group, E.rebalance_in_progress
        if error is E.none:
            group.members[member_id].last_seen = self.clock()
        return group, error

    async def commit(self, group: Group, offsets: dict[tuple[str, int], OffsetEntry]) -> None:
        await self.store.save_offsets(group, offsets)
        group.offsets.update(offsets)

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None) -> dict[tuple[str, int], OffsetEntry | None]:
        group = self.groups.get(group_id)
        known = group.offsets if group else {}
        if partitions is None:
            return dict(known)
        return {tp: known.get(tp) for tp in partitions}

    async def delete_group(self, group_id: str) -> E:
        group = self.groups.get(group_id)
        if group is None or (group.state is GroupState.EMPTY and not group.offsets and group.generation == 0):
            return E.group_id_not_found
        if group.members:
            return E.non_empty_group
        await self.store.delete_group(group)
        group.state = GroupState.DEAD
        del self.groups[group_id]
        return E.none

    async def expire_offsets(self, now_ms: int) -> int:
        """Drop committed offsets of groups that have been empty longer than the retention."""
        dropped = 0
        for group in list(self.groups.values()):
            if group.members or group.state is not GroupState.EMPTY:
                continue
            if now_ms - group.empty_since_ms < self.offsets_retention_ms:
                continue
            stale = {tp for tp, e in group.offsets.items() if now_ms - e.commit_ms >= self.offsets_retention_ms}
            if stale and len(stale) == len(group.offsets):
                await self.store.delete_group(group)
                del self.groups[group.group_id]
                dropped += len(stale)
                log.info("group %s: offsets expired after %d ms empty", group.group_id, self.offsets_retention_ms)
        return dropped

    def describe(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


def _join_error(code: E, member_id: str) -> dict[str, Any]:
    return {"error_code": code, "generation_id": -1, "protocol_type": None, "protocol_name": None,
            "leader": "", "member_id": member_id, "members": []}


Saver = Callable[[bytes, bytes | None], Awaitable[None]]
