"""The group coordinator's rules, driven directly (no sockets), with an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from kio.schema.errors import ErrorCode as E

from broker._coordinator import Coordinator, Group, GroupState, GroupStore, OffsetEntry
from broker._group_store import apply_record, group_key, group_value, offset_key, offset_value


class MemoryStore(GroupStore):
    """Keeps what the coordinator persists as the records the offsets topic would hold."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def save_group(self, group: Group) -> None:
        self.records.append((group_key(group.group_id), group_value(group)))

    async def save_offsets(self, group: Group, offsets: dict[tuple[str, int], OffsetEntry]) -> None:
        self.records += [(offset_key(group.group_id, t, p), offset_value(e)) for (t, p), e in offsets.items()]

    async def delete_group(self, group: Group) -> None:
        self.records += [(offset_key(group.group_id, t, p), None) for t, p in group.offsets]
        self.records.append((group_key(group.group_id), None))

    def replay(self) -> dict[str, Group]:
        groups: dict[str, Group] = {}
        for key, value in self.records:
            apply_record(groups, key, value)
        return groups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def join_args(member_id: str = "", **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        group_id="g", member_id=member_id, group_instance_id=None, client_id="c", client_host="127.0.0.1",
        session_timeout_ms=6000, rebalance_timeout_ms=300, protocol_type="consumer",
        protocols=[("range", b"sub-range"), ("roundrobin", b"sub-rr")], require_known_member_id=True,
    )
    args.update(overrides)
    return args


async def join_new(c: Coordinator, **overrides: Any) -> dict[str, Any]:
    """A v4+ client: asks, gets MEMBER_ID_REQUIRED with an id, joins with it."""
    first = await c.join(**join_args(**overrides))
    assert first["error_code"] is E.member_id_required
    return await c.join(**join_args(member_id=first["member_id"], **overrides))


def test_first_member_joins_at_once_and_leads() -> None:
    async def scenario() -> None:
        c = Coordinator(MemoryStore())
        joined = await asyncio.wait_for(join_new(c), 1)  # no initial delay: well under a second
        assert joined["error_code"] is E.none and joined["generation_id"] == 1
        assert joined["leader"] == joined["member_id"]
        assert [m["metadata"] for m in joined["members"]] == [b"sub-range"]
        synced = await c.sync(group_id="g", member_id=joined["member_id"], generation=1, instance_id=None,
                              assignments={joined["member_id"]: b"all-partitions"})
        assert synced["error_code"] is E.none and synced["assignment"] == b"all-partitions"
        assert c.groups["g"].state is GroupState.STABLE

    run(scenario())


def test_second_member_triggers_a_rebalance_and_gets_the_leaders_assignment() -> None:
    async def scenario() -> None:
        c = Coordinator(MemoryStore())
        a = await join_new(c)
        await c.sync(group_id="g", member_id=a["member_id"], generation=1, instance_id=None,
                     assignments={a["member_id"]: b"p0-p5"})
        b_task = asyncio.ensure_future(join_new(c, client_id="b"))
        await asyncio.sleep(0.01)
        # The first member learns of the rebalance from its heartbeat, and rejoins.
        assert c.heartbeat(group_id="g", member_id=a["member_id"], generation=1,
                           instance_id=None) is E.rebalance_in_progress
        a2 = await c.join(**join_args(member_id=a["member_id"]))
        b = await b_task
        assert a2["generation_id"] == b["generation_id"] == 2
        assert a2["leader"] == a["member_id"]  # the leader stays
        assert len(a2["members"]) == 2 and b["members"] == []
        b_sync = asyncio.ensure_future(c.sync(group_id="g", member_id=b["member_id"], generation=2,
                                              instance_id=None, assignments={}))
        await asyncio.sleep(0.01)
        assert not b_sync.done()  # followers wait for the leader's assignment
        a_sync = await c.sync(group_id="g", member_id=a["member_id"], generation=2, instance_id=None,
                              assignments={a["member_id"]: b"p0-p2", b["member_id"]: b"p3-p5"})
        assert a_sync["assignment"] == b"p0-p2"
        assert (await b_sync)["assignment"] == b"p3-p5"
        # A stale generation is refused.
        assert c.heartbeat(group_id="g", member_id=b["member_id"], generation=1,
                           instance_id=None) is E.illegal_generation

    run(scenario())


def test_a_member_that_stops_heartbeating_is_removed_and_the_rest_rebalance() -> None:
    async def scenario() -> None:
        clock = Clock()
        c = Coordinator(MemoryStore(), clock=clock)
        a = await join_new(c)
        b_task = asyncio.ensure_future(join_new(c, client_id="b"))
        await asyncio.sleep(0.01)
        await c.join(**join_args(member_id=a["member_id"]))
        b = await b_task
        assigned = {a["member_id"]: b"x", b["member_id"]: b"y"}
        b_sync = asyncio.ensure_future(c.sync(group_id="g", member_id=b["member_id"], generation=2,
                                              instance_id=None, assignments={}))
        await c.sync(group_id="g", member_id=a["member_id"], generation=2, instance_id=None, assignments=assigned)
        await b_sync
        clock.now += 5.0
        assert c.heartbeat(group_id="g", member_id=a["member_id"], generation=2, instance_id=None) is E.none
        clock.now += 2.0  # b silent for 7 s > 6 s session timeout; a heartbeated 2 s ago
        c.expire_members()
        group = c.groups["g"]
        assert list(group.members) == [a["member_id"]]
        assert group.state is GroupState.PREPARING_REBALANCE
        rejoined = await c.join(**join_args(member_id=a["member_id"]))
        assert rejoined["generation_id"] == 3 and len(rejoined["members"]) == 1

    run(scenario())


def test_a_member_that_does_not_rejoin_in_time_is_dropped_from_the_rebalance() -> None:
    async def scenario() -> None:
        c = Coordinator(MemoryStore())
        a = await join_new(c, rebalance_timeout_ms=200)
        await c.sync(group_id="g", member_id=a["member_id"], generation=1, instance_id=None,
                     assignments={a["member_id"]: b"all"})
        started = asyncio.get_running_loop().time()
        b = await join_new(c, client_id="b", rebalance_timeout_ms=200)  # a never rejoins
        waited = asyncio.get_running_loop().time() - started
        assert b["generation_id"] == 2 and b["leader"] == b["member_id"]
        assert 0.15 < waited < 2
        assert a["member_id"] not in c.groups["g"].members

    run(scenario())


def test_static_member_restart_keeps_its_assignment_without_a_rebalance() -> None:
    async def scenario() -> None:
        c = Coordinator(MemoryStore())
        leader = await c.join(**join_args(group_instance_id="leader-host"))  # static: no id round trip
        s_task = asyncio.ensure_future(c.join(**join_args(group_instance_id="pump-3")))
        await asyncio.sleep(0.01)
        await c.join(**join_args(member_id=leader["member_id"], group_instance_id="leader-host"))
        static = await s_task
        gen = static["generation_id"]
        s_sync = asyncio.ensure_future(c.sync(group_id="g", member_id=static["member_id"], generation=gen,
                                              instance_id="pump-3", assignments={}))
        await c.sync(group_id="g", member_id=leader["member_id"], generation=gen, instance_id="leader-host",
                     assignments={leader["member_id"]: b"p0", static["member_id"]: b"p1"})
        await s_sync
        # pump-3 restarts: a new process, no member id, the same instance id
        again = await c.join(**join_args(group_instance_id="pump-3"))
        assert again["error_code"] is E.none
        assert again["generation_id"] == gen  # no rebalance
        assert again["member_id"] != static["member_id"]
        synced = await c.sync(group_id="g", member_id=again["member_id"], generation=gen,
                              instance_id="pump-3", assignments={})
        assert synced["assignment"] == b"p1"
        # the old incarnation is fenced
        assert c.heartbeat(group_id="g", member_id=static["member_id"], generation=gen,
                           instance_id="pump-3") is E.unknown_member_id

    run(scenario())


def test_offsets_commit_rules_and_restore_from_the_store() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        c = Coordinator(store)
        group, error = c.check_commit("solo", "", -1, None)  # an assign()-only consumer
        assert error is E.none
        await c.commit(group, {("t", 0): OffsetEntry(42, -1, "m", 1)})
        assert c.fetch_offsets("solo", [("t", 0), ("t", 1)]) == {("t", 0): OffsetEntry(42, -1, "m", 1),
                                                                 ("t", 1): None}
        a = await join_new(c)
        await c.sync(group_id="g", member_id=a["member_id"], generation=1, instance_id=None, assignments={})
        assert c.check_commit("g", a["member_id"], 0, None)[1] is E.illegal_generation
        assert c.check_commit("g", "stranger", 1, None)[1] is E.unknown_member_id
        assert c.check_commit("g", "", -1, None)[1] is E.illegal_generation  # group has members
        g, ok = c.check_commit("g", a["member_id"], 1, None)
        assert ok is E.none
        await c.commit(g, {("t", 3): OffsetEntry(7, 0, None, 2)})

        restored = store.replay()
        assert restored["solo"].offsets[("t", 0)].offset == 42
        assert restored["g"].offsets[("t", 3)].offset == 7
        assert restored["g"].generation == 1 and list(restored["g"].members) == [a["member_id"]]
        assert restored["g"].state is GroupState.STABLE

    run(scenario())


def test_empty_groups_offsets_expire_after_the_retention_and_busy_groups_cannot_be_deleted() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        c = Coordinator(store, offsets_retention_ms=60_000)
        group, _ = c.check_commit("old", "", -1, None)
        await c.commit(group, {("t", 0): OffsetEntry(1, -1, None, 1_000)})
        group.empty_since_ms = 1_000
        assert await c.expire_offsets(30_000) == 0  # not yet
        assert await c.expire_offsets(61_001) == 1
        assert "old" not in c.groups and "old" not in store.replay()

        a = await join_new(c)
        assert await c.delete_group("g") is E.non_empty_group
        c.leave("g", [(a["member_id"], None)])
        assert c.groups["g"].state is GroupState.EMPTY
        assert await c.delete_group("g") is E.none
        assert await c.delete_group("nope") is E.group_id_not_found

    run(scenario())
