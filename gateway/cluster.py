"""The log cluster as one JSON-ready dict: brokers, topics, partitions and consumer-group lag,
read through the Kafka admin API only (confluent-kafka's ``AdminClient``), so it describes
any Kafka-protocol cluster: Vigil's own broker, Apache Kafka, Redpanda.

``describe_cluster(bootstrap_or_config, groups=None)`` is the one call (``GET /cluster``
returns what it returns). It asks, with one timeout for each request:

* metadata (``list_topics``): brokers, and per partition its leader, replicas and ISR;
* ``describe_cluster``: the cluster id and controller (left ``None`` if unsupported);
* ``list_offsets``: each partition's earliest and log-end offset (the high watermark);
* ``list_consumer_groups`` / ``describe_consumer_groups``: state and members with their
  assigned partitions; ``list_consumer_group_offsets``: committed offsets, one group per
  request (what the API allows).

``build_view`` (pure, no I/O) turns those answers into the result; ``lag`` is
``log_end - committed`` (never negative), ``None`` for a partition with no commit.

The result (times are timezone-aware UTC, ISO 8601)::

    {"as_of": "2026-11-25T14:40:00.123+00:00", "cluster_id": "...", "controller": 0,
     "brokers": [{"id": 0, "host": "127.0.0.1", "port": 9092}],
     "topics": [{"name": "telemetry", "internal": false, "records": 1500,
                 "partitions": [{"partition": 0, "leader": 0, "replicas": [0], "isr": [0],
                                 "earliest": 0, "log_end": 1500, "error": null}]}],
     "groups": [{"group": "vigil-processors", "state": "stable", "members": [
                    {"member_id": "...", "client_id": "...", "host": "/127.0.0.1",
                     "assignment": [{"topic": "telemetry", "partition": 0}]}],
                 "lag": 12, "partitions": [{"topic": "telemetry", "partition": 0,
                     "committed": 1488, "log_end": 1500, "lag": 12}]}]}

``records`` is ``sum(log_end - earliest)`` (on a compacted topic an upper bound). Internal
topics (names starting with ``__``) are left out unless ``include_internal=True``; a group's
committed offsets on them still show. ``ClusterUnavailable`` is raised when the cluster
cannot be reached at all; a group or partition that fails alone carries an ``error``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

__all__ = ["ClusterUnavailable", "PartitionInfo", "RawCluster", "build_view", "describe_cluster", "lag"]

log = logging.getLogger("vigil.gateway.cluster")


class ClusterUnavailable(RuntimeError):
    """The cluster did not answer (wrong bootstrap address, cluster down, auth refused)."""


# --- the pure core -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    state: str
    members: tuple[dict[str, Any], ...] = ()
    committed: Mapping[tuple[str, int], int] = field(default_factory=dict)  # only real commits
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RawCluster:
    """The admin API's answers as plain data: what ``build_view`` needs."""

    brokers: tuple[tuple[int, str, int], ...]
    partitions: tuple[PartitionInfo, ...]
    offsets: Mapping[tuple[str, int], tuple[int | None, int | None]]  # (earliest, log_end)
    groups: tuple[GroupInfo, ...] = ()
    cluster_id: str | None = None
    controller: int | None = None
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))


def lag(committed: int | None, log_end: int | None) -> int | None:
    """How many records a group has still to read in one partition."""
    if committed is None or committed < 0 or log_end is None or log_end < 0:
        return None
    return max(0, log_end - committed)


def _internal(topic: str) -> bool:
    return topic.startswith("__")


def build_view(raw: RawCluster, *, include_internal: bool = False) -> dict[str, Any]:
    topics: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(raw.partitions, key=lambda p: (p.topic, p.partition)):
        if _internal(p.topic) and not include_internal:
            continue
        earliest, log_end = raw.offsets.get((p.topic, p.partition), (None, None))
        topics.setdefault(p.topic, []).append({
            "partition": p.partition, "leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isr),
            "earliest": earliest, "log_end": log_end, "error": p.error})
    groups = []
    for g in sorted(raw.groups, key=lambda g: g.group):
        assigned = {(a["topic"], a["partition"]) for m in g.members for a in m["assignment"]}
        rows: list[dict[str, Any]] = []
        for topic, partition in sorted(assigned | set(g.committed)):
            committed = g.committed.get((topic, partition))
            log_end = raw.offsets.get((topic, partition), (None, None))[1]
            rows.append({"topic": topic, "partition": partition, "committed": committed,
                         "log_end": log_end, "lag": lag(committed, log_end)})
        known = [r["lag"] for r in rows if r["lag"] is not None]
        groups.append({"group": g.group, "state": g.state, "members": list(g.members),
                       "lag": sum(known) if known else None, "partitions": rows, "error": g.error})
    return {
        "as_of": raw.as_of.isoformat(timespec="milliseconds"),
        "cluster_id": raw.cluster_id,
        "controller": raw.controller,
        "brokers": [{"id": i, "host": h, "port": port} for i, h, port in sorted(raw.brokers)],
        "topics": [{"name": name, "internal": _internal(name),
                    "records": sum((p["log_end"] or 0) - (p["earliest"] or 0) for p in parts),
                    "partitions": parts} for name, parts in topics.items()],
        "groups": groups,
    }


# --- the I/O shell -----------------------------------------------------------------------


def _admin_config(bootstrap: str | Mapping[str, Any], timeout: float) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    config.setdefault("socket.connection.setup.timeout.ms", int(timeout * 1000))
    return config


def _error(err: Any) -> str | None:
    return None if err is None else str(err)


def _state(state: Any) -> str:
    name = getattr(state, "name", None) or str(state)
    return name.lower()


def _offsets(admin: AdminClient, tps: Iterable[tuple[str, int]], timeout: float
             ) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    tps = list(tps)
    out: dict[tuple[str, int], list[int | None]] = {tp: [None, None] for tp in tps}
    if not tps:
        return {}
    for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
        futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in tps},
                                     request_timeout=timeout)
        for tp, fut in futures.items():
            try:
                out[(tp.topic, tp.partition)][i] = fut.result(timeout).offset
            except KafkaException as exc:
                log.warning("no %s offset for %s[%d]: %s", ("earliest", "log-end")[i], tp.topic,
                            tp.partition, exc)
    return {tp: (v[0], v[1]) for tp, v in out.items()}


def _group(admin: AdminClient, group: str, description: Any, timeout: float) -> GroupInfo:
    members = tuple(
        {"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
         "group_instance_id": m.group_instance_id,
         "assignment": [{"topic": tp.topic, "partition": tp.partition}
                        for tp in sorted(m.assignment.topic_partitions if m.assignment else [],
                                         key=lambda tp: (tp.topic, tp.partition))]}
        for m in description.members)
    try:
        [fut] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                  request_timeout=timeout).values()
        tps = fut.result(timeout).topic_partitions or []
    except KafkaException as exc:
        return GroupInfo(group, _state(description.state), members, {}, f"committed offsets: {exc}")
    committed = {(tp.topic, tp.partition): tp.offset for tp in tps if tp.error is None and tp.offset >= 0}
    return GroupInfo(group, _state(description.state), members, committed)


def _groups(admin: AdminClient, wanted: list[str] | None, timeout: float) -> list[GroupInfo]:
    if wanted is None:
        listed = admin.list_consumer_groups(request_timeout=timeout).result(timeout)
        wanted = sorted(g.group_id for g in listed.valid)
        for err in listed.errors:
            log.warning("listing consumer groups: %s", err)
    if not wanted:
        return []
    out = []
    for group, fut in admin.describe_consumer_groups(wanted, request_timeout=timeout).items():
        try:
            description = fut.result(timeout)
        except KafkaException as exc:
            out.append(GroupInfo(group, "unknown", error=str(exc)))
            continue
        out.append(_group(admin, group, description, timeout))
    return out


def collect(bootstrap: str | Mapping[str, Any], groups: list[str] | None = None, *,
            timeout: float = 10.0) -> RawCluster:
    """Ask the cluster (the I/O half of ``describe_cluster``)."""
    admin = AdminClient(_admin_config(bootstrap, timeout))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        servers = bootstrap if isinstance(bootstrap, str) else bootstrap.get("bootstrap.servers")
        raise ClusterUnavailable(f"cannot read the cluster's metadata from {servers}: {exc}") from None
    cluster_id = md.cluster_id
    controller: int | None = md.controller_id if md.controller_id is not None and md.controller_id >= 0 else None
    try:
        desc = admin.describe_cluster(request_timeout=timeout).result(timeout)
        cluster_id = desc.cluster_id or cluster_id
        controller = desc.controller.id if desc.controller is not None else controller
    except (KafkaException, NotImplementedError) as exc:  # an old broker: metadata is enough
        log.debug("describe_cluster unavailable: %s", exc)
    partitions = tuple(
        PartitionInfo(t.topic, p.id, p.leader, tuple(p.replicas), tuple(p.isrs), _error(p.error))
        for t in md.topics.values() for p in t.partitions.values())
    group_infos = _groups(admin, groups, timeout)
    tps = {(p.topic, p.partition) for p in partitions}
    tps |= {tp for g in group_infos for tp in g.committed}
    return RawCluster(
        brokers=tuple((b.id, b.host, b.port) for b in md.brokers.values()),
        partitions=partitions,
        offsets=_offsets(admin, sorted(tps), timeout),
        groups=tuple(group_infos),
        cluster_id=cluster_id,
        controller=controller,
    )


def describe_cluster(bootstrap: str | Mapping[str, Any], groups: list[str] | None = None, *,
                     include_internal: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    """Brokers, topics -> partitions (leader, replicas, ISR, earliest and log-end offsets) and
    consumer groups (state, members, committed offset and lag per partition).

    ``bootstrap`` is ``"host:port,..."`` or a full librdkafka admin config (for SASL/TLS);
    ``groups`` limits the groups described (None: every group the cluster lists)."""
    return build_view(collect(bootstrap, groups, timeout=timeout), include_internal=include_internal)
