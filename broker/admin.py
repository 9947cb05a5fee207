"""Admin tools over a Kafka client: `vigil topics`, `vigil groups`, `vigil produce`,
`vigil consume`.

In the spirit of Kafka's kafka-topics.sh, kafka-consumer-groups.sh and console
producer/consumer. Everything goes through confluent-kafka, so the tools work against
Vigil's broker and any other Kafka cluster alike. Each command is a plain function
(`create_topic`, `list_topics`, `describe_topics`, `delete_topics`, `list_groups`,
`describe_groups`, `delete_groups`, `produce_lines`, `consume_records`); the argparse
layer at the bottom only parses, prints and turns `AdminError` into one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

log = logging.getLogger("vigil.broker.admin")

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# How long any one request (or the first connection) may take before we give up.
REQUEST_TIMEOUT = 5.0
# How long the producer keeps retrying a record before reporting it as failed.
DELIVERY_TIMEOUT = 30.0
# How long a group member may wait for its partitions before an idle timeout applies.
GROUP_JOIN_TIMEOUT = 60.0

# Error codes that mean "no broker answered at all".
_UNREACHABLE = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
})


class AdminError(Exception):
    """A failure to report to the user as one line, without a traceback."""


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True)
class TopicInfo:
    name: str
    topic_id: str
    partitions: tuple[PartitionInfo, ...]
    configs: Mapping[str, str] = field(default_factory=dict)

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0


@dataclass(frozen=True)
class ConsumedRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ProduceReport:
    """What happened to the lines given to `produce_lines`."""

    sent: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


# ---------------------------------------------------------------------------- clients


class _LibrdkafkaLog:
    """Routes librdkafka's own log lines to our logger at DEBUG, so that an unreachable
    broker yields one clear error rather than a screenful of connection failures."""

    _log = logging.getLogger("vigil.broker.admin.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._log.debug(fmt, *args)


def _client_config(bootstrap: str, timeout: float) -> dict[str, Any]:
    ms = int(timeout * 1000)
    return {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": max(ms, 10),
        "socket.connection.setup.timeout.ms": max(ms, 1000),
        "logger": _LibrdkafkaLog(),
    }


def _admin(bootstrap: str, timeout: float) -> AdminClient:
    return AdminClient(_client_config(bootstrap, timeout))


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def _metadata(client: AdminClient | Producer | Consumer, bootstrap: str, timeout: float) -> Any:
    """Cluster metadata, or an AdminError saying the broker cannot be reached."""
    try:
        return client.list_topics(timeout=timeout)
    except KafkaException as exc:
        err = _kafka_error(exc)
        if err is not None and err.code() in _UNREACHABLE:
            raise AdminError(f"cannot reach the broker at {bootstrap}") from None
        raise AdminError(f"metadata request to {bootstrap} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KafkaException):
        err = _kafka_error(exc)
        if err is not None:
            return f"{err.str()} ({err.name()})"
    return str(exc) or type(exc).__name__


def _result(future: Any, what: str, bootstrap: str, timeout: float) -> Any:
    """Wait for an admin future and translate its failure into an AdminError."""
    try:
        return future.result(timeout=timeout + 1)
    except KafkaException as exc:
        err = _kafka_error(exc)
        code = err.code() if err is not None else None
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            raise AdminError(f"{what}: topic already exists") from None
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise AdminError(f"{what}: unknown topic") from None
        if code == KafkaError.GROUP_ID_NOT_FOUND:
            raise AdminError(f"{what}: unknown group") from None
        if code == KafkaError.NON_EMPTY_GROUP:
            raise AdminError(f"{what}: the group still has active members") from None
        if code in _UNREACHABLE:
            raise AdminError(f"{what}: no answer from the broker at {bootstrap} "
                             f"within {timeout:g}s") from None
        raise AdminError(f"{what}: {_describe(exc)}") from None
    except TimeoutError:
        raise AdminError(f"{what}: no answer from the broker at {bootstrap} "
                         f"within {timeout:g}s") from None


# ----------------------------------------------------------------------------- topics


def parse_configs(items: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` as a dict; ValueError names the first malformed item."""
    configs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        configs[key.strip()] = value.strip()
    return configs


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str] | None = None,
    *,
    if_not_exists: bool = False,
    timeout: float = REQUEST_TIMEOUT,
) -> bool:
    """Create a topic. Returns False if it already existed and `if_not_exists` is set."""
    admin = _admin(bootstrap, timeout)
    existing = _metadata(admin, bootstrap, timeout).topics
    if name in existing and existing[name].error is None:
        if if_not_exists:
            return False
        raise AdminError(f"topic {name!r} already exists")
    new = NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                   config=dict(configs or {}))
    futures = admin.create_topics([new], request_timeout=timeout, operation_timeout=timeout)
    try:
        _result(futures[name], f"cannot create topic {name!r}", bootstrap, timeout)
    except AdminError as exc:  # lost a race with another creator
        if if_not_exists and str(exc).endswith("topic already exists"):
            return False
        raise
    log.info("created topic %s (%d partitions, replication factor %d)",
             name, partitions, replication_factor)
    return True


def list_topics(
    bootstrap: str, *, include_internal: bool = True, timeout: float = REQUEST_TIMEOUT
) -> list[str]:
    """Names of the cluster's topics, sorted."""
    topics = _metadata(_admin(bootstrap, timeout), bootstrap, timeout).topics
    return sorted(t for t in topics if include_internal or not t.startswith("__"))


def describe_topics(
    bootstrap: str,
    names: Sequence[str] | None = None,
    *,
    include_internal: bool = True,
    timeout: float = REQUEST_TIMEOUT,
) -> list[TopicInfo]:
    """Partition layout and non-default configs of the named topics (all if none named)."""
    admin = _admin(bootstrap, timeout)
    known = _metadata(admin, bootstrap, timeout).topics
    if not names:
        names = sorted(t for t in known if include_internal or not t.startswith("__"))
        if not names:
            return []
    _require_known(known, names)
    futures = admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout)
    described = {n: _result(futures[n], f"cannot describe topic {n!r}", bootstrap, timeout)
                 for n in names}
    configs = _topic_configs(admin, names, timeout)
    result = []
    for n in names:
        d = described[n]
        parts = tuple(
            PartitionInfo(
                partition=p.id,
                leader=p.leader.id if p.leader is not None and p.leader.id >= 0 else None,
                replicas=tuple(r.id for r in p.replicas),
                isr=tuple(r.id for r in p.isr),
            )
            for p in sorted(d.partitions, key=lambda p: p.id)
        )
        result.append(TopicInfo(name=n, topic_id=str(d.topic_id), partitions=parts,
                                configs=configs.get(n, {})))
    return result


def _require_known(known: Mapping[str, Any], names: Iterable[str]) -> None:
    missing = [n for n in names if n not in known or known[n].error is not None]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise AdminError(f"unknown topic{plural} {', '.join(map(repr, missing))}")


def _topic_configs(admin: AdminClient, names: Sequence[str],
                   timeout: float) -> dict[str, dict[str, str]]:
    """Configs set on each topic (as kafka-topics shows them). A broker that cannot
    describe configs gets a warning and empty configs rather than a failed describe."""
    out: dict[str, dict[str, str]] = {}
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names],
                                     request_timeout=timeout)
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout + 1)
        except (KafkaException, TimeoutError) as exc:
            log.warning("cannot read the configs of topic %s: %s", resource.name, _describe(exc))
            continue
        out[resource.name] = {
            k: e.value for k, e in sorted(entries.items())
            if e.value is not None
            and (not e.is_default or e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
        }
    return out


def format_describe(topics: Iterable[TopicInfo]) -> str:
    """kafka-topics.sh --describe layout: a tab-separated header line per topic, then one
    indented line per partition."""
    lines = []
    for t in topics:
        configs = ",".join(f"{k}={v}" for k, v in t.configs.items())
        lines.append(f"Topic: {t.name}\tTopicId: {t.topic_id}\tPartitionCount: "
                     f"{len(t.partitions)}\tReplicationFactor: {t.replication_factor}\t"
                     f"Configs: {configs}")
        for p in t.partitions:
            leader = "none" if p.leader is None else str(p.leader)
            lines.append(f"\tTopic: {t.name}\tPartition: {p.partition}\tLeader: {leader}\t"
                         f"Replicas: {','.join(map(str, p.replicas))}\t"
                         f"Isr: {','.join(map(str, p.isr))}")
    return "\n".join(lines) + ("\n" if lines else "")


def delete_topics(bootstrap: str, names: Sequence[str], *,
                  timeout: float = REQUEST_TIMEOUT) -> None:
    """Delete the named topics; all must exist."""
    admin = _admin(bootstrap, timeout)
    known = _metadata(admin, bootstrap, timeout).topics
    _require_known(known, names)
    futures = admin.delete_topics(list(names), request_timeout=timeout, operation_timeout=timeout)
    for n in names:
        _result(futures[n], f"cannot delete topic {n!r}", bootstrap, timeout)
        log.info("deleted topic %s", n)


# ----------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str  # as Kafka names it: Stable, Empty, PreparingRebalance, ...
    protocol_type: str  # "consumer", or "" for a group that only commits offsets


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None  # group.instance.id of a static member
    partitions: tuple[tuple[str, int], ...]  # (topic, partition) assigned to it


@dataclass(frozen=True)
class GroupOffset:
    """One partition the group has committed an offset for, or is assigned."""

    topic: str
    partition: int
    current_offset: int | None  # the committed offset; None: nothing committed
    log_end_offset: int | None  # None: the partition could not be read
    member: GroupMember | None  # the member assigned the partition, if any

    @property
    def lag(self) -> int | None:
        if self.current_offset is None or self.log_end_offset is None:
            return None
        return max(self.log_end_offset - self.current_offset, 0)


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    assignor: str
    coordinator: int | None
    members: tuple[GroupMember, ...]
    offsets: tuple[GroupOffset, ...]


_STATE_NAMES = {
    ConsumerGroupState.UNKNOWN: "Unknown",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.EMPTY: "Empty",
}


def _state_name(state: Any) -> str:
    return _STATE_NAMES.get(state, str(state))


def list_groups(bootstrap: str, *, timeout: float = REQUEST_TIMEOUT) -> list[GroupListing]:
    """Every group the cluster knows, by id. librdkafka tells only whether a group has a
    protocol type, so a group of subscribers shows as "consumer"."""
    admin = _admin(bootstrap, timeout)
    _metadata(admin, bootstrap, timeout)
    listed = _result(admin.list_consumer_groups(request_timeout=timeout),
                     "cannot list groups", bootstrap, timeout)
    for error in listed.errors:
        log.warning("listing groups: %s", error)
    return sorted(
        (GroupListing(g.group_id, _state_name(g.state),
                      "" if g.is_simple_consumer_group else "consumer")
         for g in listed.valid),
        key=lambda g: g.group_id,
    )


def describe_groups(bootstrap: str, names: Sequence[str] | None = None, *,
                    timeout: float = REQUEST_TIMEOUT) -> list[GroupDescription]:
    """State, members and, per partition, committed offset and lag of the named groups
    (all if none named). A group with no members and no committed offsets is unknown."""
    admin = _admin(bootstrap, timeout)
    _metadata(admin, bootstrap, timeout)
    if not names:
        names = [g.group_id for g in list_groups(bootstrap, timeout=timeout)]
        if not names:
            return []
    futures = admin.describe_consumer_groups(list(names), request_timeout=timeout)
    described = {n: _result(futures[n], f"cannot describe group {n!r}", bootstrap, timeout)
                 for n in names}
    committed = {n: _committed_offsets(admin, n, bootstrap, timeout) for n in names}
    missing = [n for n in names
               if described[n].state == ConsumerGroupState.DEAD
               or (not described[n].members and not committed[n])]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise AdminError(f"unknown group{plural} {', '.join(map(repr, missing))}")

    result = []
    with _watermarks(bootstrap, timeout) as log_end:
        for n in names:
            d = described[n]
            members = tuple(sorted(
                (GroupMember(
                    member_id=m.member_id, client_id=m.client_id, host=m.host,
                    instance_id=m.group_instance_id or None,
                    partitions=tuple(sorted((tp.topic, tp.partition)
                                            for tp in m.assignment.topic_partitions)))
                 for m in d.members),
                key=lambda m: (m.partitions, m.member_id)))
            owner = {tp: m for m in members for tp in m.partitions}
            offsets = tuple(
                GroupOffset(topic, partition, committed[n].get((topic, partition)),
                            log_end(topic, partition), owner.get((topic, partition)))
                for topic, partition in sorted(set(committed[n]) | set(owner)))
            coordinator = d.coordinator.id if d.coordinator is not None else None
            result.append(GroupDescription(n, _state_name(d.state), d.partition_assignor or "",
                                           coordinator, members, offsets))
    return result


def _committed_offsets(admin: AdminClient, group: str, bootstrap: str,
                       timeout: float) -> dict[tuple[str, int], int]:
    """The group's committed offsets, by (topic, partition)."""
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                request_timeout=timeout)
    listed = _result(futures[group], f"cannot read the offsets of group {group!r}",
                     bootstrap, timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions
            if tp.error is None and tp.offset >= 0}


@contextmanager
def _watermarks(bootstrap: str, timeout: float) -> Iterator[Callable[[str, int], int | None]]:
    """A lookup of a partition's log end offset (None if it cannot be read), over a
    consumer that never joins a group."""
    config = _client_config(bootstrap, timeout)
    config.update({"group.id": "vigil-groups-describe", "enable.auto.commit": False})
    consumer = Consumer(config)

    def log_end(topic: str, partition: int) -> int | None:
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=timeout, cached=False)
        except KafkaException as exc:
            log.warning("cannot read the end of %s[%d]: %s", topic, partition, _describe(exc))
            return None
        return int(high)

    try:
        yield log_end
    finally:
        consumer.close()


def delete_groups(bootstrap: str, names: Sequence[str], *,
                  timeout: float = REQUEST_TIMEOUT) -> None:
    """Delete the named groups and their committed offsets; they must have no members."""
    admin = _admin(bootstrap, timeout)
    _metadata(admin, bootstrap, timeout)
    futures = admin.delete_consumer_groups(list(names), request_timeout=timeout)
    for n in names:
        _result(futures[n], f"cannot delete group {n!r}", bootstrap, timeout)
        log.info("deleted group %s", n)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart (the last one unpadded)."""
    rows = [list(header), *map(list, rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def format_group_list(groups: Iterable[GroupListing]) -> str:
    lines = _table(("GROUP", "STATE", "PROTOCOL-TYPE"),
                   ((g.group_id, g.state, _dash(g.protocol_type)) for g in groups))
    return "\n".join(lines) + "\n"


def format_group_describe(groups: Iterable[GroupDescription]) -> str:
    """Per group: a header line, its members, then kafka-consumer-groups.sh --describe's
    per-partition table; "-" where there is no value."""
    out: list[str] = []
    for g in groups:
        if out:
            out.append("")
        out.append(f"Group: {g.group_id}\tState: {g.state}\tAssignor: {_dash(g.assignor)}\t"
                   f"Coordinator: {_dash(g.coordinator)}")
        out.append("")
        if g.members:
            out += _table(
                ("MEMBER-ID", "CLIENT-ID", "HOST", "INSTANCE-ID", "PARTITIONS"),
                ((m.member_id, m.client_id, m.host, _dash(m.instance_id),
                  _dash(_partition_list(m.partitions))) for m in g.members))
        else:
            out.append(f"Consumer group '{g.group_id}' has no active members.")
        out.append("")
        out += _table(
            ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
             "CONSUMER-ID", "HOST", "CLIENT-ID"),
            ((o.topic, str(o.partition), _dash(o.current_offset), _dash(o.log_end_offset),
              _dash(o.lag), _dash(o.member and o.member.member_id),
              _dash(o.member and o.member.host), _dash(o.member and o.member.client_id))
             for o in g.offsets))
    return "\n".join(out) + ("\n" if out else "")


def _partition_list(partitions: Iterable[tuple[str, int]]) -> str:
    """`topic:0,1 other:3` for [(topic, 0), (topic, 1), (other, 3)]."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{t}:{','.join(map(str, ps))}" for t, ps in by_topic.items())


# ---------------------------------------------------------------------------- produce


def _check_topic(metadata: Any, topic: str, partition: int | None) -> int:
    """The topic's partition count; AdminError if the topic or partition does not exist."""
    t = metadata.topics.get(topic)
    if t is None or t.error is not None:
        raise AdminError(f"unknown topic {topic!r}")
    count = len(t.partitions)
    if partition is not None and partition not in t.partitions:
        raise AdminError(f"topic {topic!r} has no partition {partition} "
                         f"(it has {count}: 0..{count - 1})")
    return count


def produce_lines(
    bootstrap: str,
    topic: str,
    lines: Iterable[bytes],
    *,
    key_separator: bytes | None = None,
    acks: str = "all",
    partition: int | None = None,
    timeout: float = REQUEST_TIMEOUT,
    delivery_timeout: float = DELIVERY_TIMEOUT,
) -> ProduceReport:
    """Send one record per line (trailing newline removed). With `key_separator`, each
    line is `key<sep>value` split at the first separator; a line without it is reported
    as an error and not sent. Waits for every delivery before returning."""
    config = _client_config(bootstrap, timeout)
    config.update({
        "acks": acks,
        "linger.ms": 5,
        "message.timeout.ms": int(delivery_timeout * 1000),
        "allow.auto.create.topics": False,
    })
    producer = Producer(config)
    _check_topic(_metadata(producer, bootstrap, timeout), topic, partition)
    report = ProduceReport()

    def on_delivery_of(number: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                report.delivered += 1
            else:
                report.errors.append(f"line {number}: {err.str()} ({err.name()})")
        return on_delivery

    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n").rstrip(b"\r")
        key: bytes | None = None
        if key_separator is not None:
            key, sep, line = line.partition(key_separator)
            if not sep:
                report.errors.append(f"line {number}: no key separator "
                                     f"{key_separator.decode(errors='replace')!r}; not sent")
                continue
        while True:
            try:
                producer.produce(topic, value=line, key=key,
                                 on_delivery=on_delivery_of(number), **extra)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        report.sent += 1
        producer.poll(0)
    left = producer.flush(delivery_timeout + timeout)
    if left:
        report.errors.append(f"{left} records still undelivered after "
                             f"{delivery_timeout + timeout:g}s")
    return report


# ---------------------------------------------------------------------------- consume


def consume_records(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = False,
    partition: int | None = None,
    offset: int | None = None,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    group: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Generator[ConsumedRecord, None, None]:
    """Records of `topic`, as they arrive. Without `group`, the consumer is assigned every
    partition (or just `partition`) starting at the end, the beginning (`from_beginning`)
    or `offset`, and commits nothing. With `group`, it subscribes as a member of that group
    and commits its position. Stops after `max_messages` records, or once nothing has
    arrived for `idle_timeout` seconds (None: never)."""
    if group is not None and (partition is not None or offset is not None):
        raise AdminError("--partition and --offset cannot be used with --group")
    if offset is not None and from_beginning:
        raise AdminError("--offset and --from-beginning are exclusive")
    config = _client_config(bootstrap, timeout)
    config.update({
        "group.id": group or "vigil-console-consumer",
        "enable.auto.commit": group is not None,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "allow.auto.create.topics": False,
        "fetch.wait.max.ms": 100,
    })
    consumer = Consumer(config)
    # The idle clock runs from the assignment (or the last record), not from the start:
    # joining a group can take a while. Until then a group member waits at most
    # GROUP_JOIN_TIMEOUT (or idle_timeout, if longer) when an idle timeout is set.
    started = time.monotonic()
    last_activity: float | None = None

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        nonlocal last_activity
        last_activity = time.monotonic()
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    try:
        count = _check_topic(_metadata(consumer, bootstrap, timeout), topic, partition)
        if group is not None:
            consumer.subscribe([topic], on_assign=on_assign)
        else:
            start = (offset if offset is not None
                     else OFFSET_BEGINNING if from_beginning else OFFSET_END)
            wanted = [partition] if partition is not None else list(range(count))
            consumer.assign([TopicPartition(topic, p, start) for p in wanted])
            last_activity = time.monotonic()
        seen = 0
        while max_messages is None or seen < max_messages:
            wait = 0.5
            if idle_timeout is not None:
                if last_activity is None:
                    limit = max(idle_timeout, GROUP_JOIN_TIMEOUT)
                    if time.monotonic() - started > limit:
                        raise AdminError(f"group {group!r} was given no partitions of "
                                         f"{topic!r} within {limit:g}s")
                else:
                    remaining = idle_timeout - (time.monotonic() - last_activity)
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
            msg = consumer.poll(wait)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                 KafkaError.OFFSET_OUT_OF_RANGE,
                                                 KafkaError.TOPIC_AUTHORIZATION_FAILED):
                    raise AdminError(f"consuming {topic!r}: {err.str()} ({err.name()})")
                log.warning("consuming %s: %s", topic, err.str())
                continue
            last_activity = time.monotonic()
            seen += 1
            yield ConsumedRecord(partition=msg.partition() or 0, offset=msg.offset() or 0,
                                 key=msg.key(), value=msg.value())
    finally:
        consumer.close()


def format_record(record: ConsumedRecord, *, print_key: bool = False) -> bytes:
    """One output line: the value, or key<TAB>value; a null key or value prints as null."""
    value = b"null" if record.value is None else record.value
    if print_key:
        key = b"null" if record.key is None else record.key
        return key + b"\t" + value + b"\n"
    return value + b"\n"


# -------------------------------------------------------------------------------- CLI


def register(sub: Any) -> None:
    """Add `topics`, `groups`, `produce` and `consume` to the `vigil` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap-server", metavar="HOST:PORT",
        default=os.environ.get("VIGIL_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help=f"broker to talk to (default: $VIGIL_BOOTSTRAP or {DEFAULT_BOOTSTRAP})",
    )

    topics = sub.add_parser("topics", help="create, list, describe and delete topics")
    topics.set_defaults(func=lambda args: _usage(topics))
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION")

    p = tsub.add_parser("create", parents=[common], help="create a topic")
    p.add_argument("name")
    p.add_argument("--partitions", type=_positive, default=1, help="default 1")
    p.add_argument("--replication-factor", type=_positive, default=1, help="default 1")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="topic config, e.g. retention.ms=86400000 (repeatable)")
    p.add_argument("--if-not-exists", action="store_true",
                   help="succeed quietly if the topic already exists")
    p.set_defaults(func=_cli(_cmd_create))

    p = tsub.add_parser("list", parents=[common], help="list topic names")
    p.add_argument("--exclude-internal", action="store_true", help="hide topics named __*")
    p.set_defaults(func=_cli(_cmd_list))

    p = tsub.add_parser("describe", parents=[common],
                        help="show partitions, leaders, replicas and configs")
    p.add_argument("names", nargs="*", metavar="NAME", help="topics (default: all)")
    p.add_argument("--exclude-internal", action="store_true", help="hide topics named __*")
    p.set_defaults(func=_cli(_cmd_describe))

    p = tsub.add_parser("delete", parents=[common], help="delete topics")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=_cli(_cmd_delete))

    groups = sub.add_parser("groups", help="list, describe and delete consumer groups")
    groups.set_defaults(func=lambda args: _usage(groups))
    gsub = groups.add_subparsers(dest="groups_command", metavar="ACTION")

    p = gsub.add_parser("list", parents=[common], help="list groups: id, state, protocol type")
    p.set_defaults(func=_cli(_cmd_groups_list))

    p = gsub.add_parser("describe", parents=[common],
                        help="show members, committed offsets and lag per partition")
    p.add_argument("names", nargs="*", metavar="GROUP", help="groups (default: all)")
    p.set_defaults(func=_cli(_cmd_groups_describe))

    p = gsub.add_parser("delete", parents=[common],
                        help="delete groups without members, and their committed offsets")
    p.add_argument("names", nargs="+", metavar="GROUP")
    p.set_defaults(func=_cli(_cmd_groups_delete))

    p = sub.add_parser(
        "produce", parents=[common], help="send stdin lines as records",
        description="Send each line of stdin as one record; waits for every delivery at EOF "
                    "and exits 1 if any record failed.",
    )
    p.add_argument("--topic", required=True)
    p.add_argument("--key-separator", metavar="SEP",
                   help="parse every line as KEY<SEP>VALUE, split at the first SEP; a line "
                        "without SEP is reported and not sent. Without this option the whole "
                        "line is the value and records have no key.")
    p.add_argument("--acks", choices=["all", "-1", "0", "1"], default="all",
                   help="acknowledgements to wait for (default all)")
    p.add_argument("--partition", type=_non_negative,
                   help="send every record to this partition (default: by key, else spread)")
    p.set_defaults(func=_cli(_cmd_produce))

    p = sub.add_parser(
        "consume", parents=[common], help="print a topic's records",
        description="Print record values, one per line. Without --group, reads the topic's "
                    "partitions directly (assign) and commits nothing.",
    )
    p.add_argument("--topic", required=True)
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the earliest offset (default: only new records)")
    p.add_argument("--partition", type=_non_negative, help="read only this partition")
    p.add_argument("--offset", type=_non_negative, help="start at this offset (needs --partition)")
    p.add_argument("--max-messages", type=_positive, help="exit after this many records")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="exit after this long without a record (default: run until ^C)")
    p.add_argument("--print-key", action="store_true", help="print KEY<TAB>VALUE")
    p.add_argument("--group", metavar="GROUP",
                   help="consume as a member of this group and commit offsets")
    p.set_defaults(func=_cli(_cmd_consume))


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return n


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _cli(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn AdminError (and any client error that slips through) into one line on stderr."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AdminError as exc:
            print(f"vigil: error: {exc}", file=sys.stderr)
        except KafkaException as exc:
            print(f"vigil: error: {_describe(exc)}", file=sys.stderr)
        return 1

    return run


def _cmd_create(args: argparse.Namespace) -> int:
    try:
        configs = parse_configs(args.config)
    except ValueError as exc:
        raise AdminError(f"--config: {exc}") from None
    created = create_topic(args.bootstrap_server, args.name, args.partitions,
                           args.replication_factor, configs, if_not_exists=args.if_not_exists)
    print(f"Created topic {args.name}." if created else f"Topic {args.name} already exists.")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for name in list_topics(args.bootstrap_server, include_internal=not args.exclude_internal):
        print(name)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    topics = describe_topics(args.bootstrap_server, args.names,
                             include_internal=not args.exclude_internal)
    sys.stdout.write(format_describe(topics))
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    delete_topics(args.bootstrap_server, args.names)
    for name in args.names:
        print(f"Deleted topic {name}.")
    return 0


def _cmd_groups_list(args: argparse.Namespace) -> int:
    sys.stdout.write(format_group_list(list_groups(args.bootstrap_server)))
    return 0


def _cmd_groups_describe(args: argparse.Namespace) -> int:
    sys.stdout.write(format_group_describe(describe_groups(args.bootstrap_server, args.names)))
    return 0


def _cmd_groups_delete(args: argparse.Namespace) -> int:
    delete_groups(args.bootstrap_server, args.names)
    for name in args.names:
        print(f"Deleted group {name}.")
    return 0


_MAX_ERROR_LINES = 20


def _cmd_produce(args: argparse.Namespace) -> int:
    separator = None if args.key_separator is None else args.key_separator.encode()
    if separator == b"":
        raise AdminError("--key-separator must not be empty")
    report = produce_lines(args.bootstrap_server, args.topic, sys.stdin.buffer,
                           key_separator=separator, acks=args.acks, partition=args.partition)
    if not report.errors:
        return 0
    for line in report.errors[:_MAX_ERROR_LINES]:
        print(f"vigil: error: {line}", file=sys.stderr)
    if report.failed > _MAX_ERROR_LINES:
        print(f"vigil: ... and {report.failed - _MAX_ERROR_LINES} more", file=sys.stderr)
    print(f"vigil: error: {report.failed} record(s) failed, {report.delivered} delivered",
          file=sys.stderr)
    return 1


def _cmd_consume(args: argparse.Namespace) -> int:
    if args.offset is not None and args.partition is None:
        raise AdminError("--offset needs --partition")
    out = sys.stdout.buffer
    records = consume_records(
        args.bootstrap_server, args.topic, from_beginning=args.from_beginning,
        partition=args.partition, offset=args.offset, max_messages=args.max_messages,
        idle_timeout=args.timeout, group=args.group,
    )
    try:
        for record in records:
            out.write(format_record(record, print_key=args.print_key))
            out.flush()
    finally:
        records.close()
    return 0
