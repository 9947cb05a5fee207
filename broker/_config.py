"""Broker and topic settings, named as Kafka names them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TOPIC_CONFIGS", "BrokerConfig", "ConfigError", "TopicConfigDef", "validate_topic_configs"]

DAY_MS = 24 * 3600 * 1000


class ConfigError(ValueError):
    """A setting with an unknown name or a bad value."""


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    name: str
    default: str
    kind: str  # "long", "int", "string", "list", "boolean", "double"
    doc: str
    choices: tuple[str, ...] = ()

    def check(self, value: str) -> None:
        if self.kind in ("long", "int"):
            try:
                int(value)
            except ValueError:
                raise ConfigError(f"{self.name}: {value!r} is not an integer") from None
        elif self.kind == "double":
            try:
                float(value)
            except ValueError:
                raise ConfigError(f"{self.name}: {value!r} is not a number") from None
        elif self.kind == "boolean" and value.lower() not in ("true", "false"):
            raise ConfigError(f"{self.name}: {value!r} is not true or false")
        if self.choices:
            parts = [p.strip() for p in value.split(",")] if self.kind == "list" else [value]
            bad = [p for p in parts if p not in self.choices]
            if bad:
                raise ConfigError(f"{self.name}: {bad[0]!r} is not one of {', '.join(self.choices)}")


_DEFS = (
    TopicConfigDef("cleanup.policy", "delete", "list", "delete or compact old segments",
                   ("delete", "compact")),
    TopicConfigDef("retention.ms", str(7 * DAY_MS), "long", "delete segments older than this (-1: never)"),
    TopicConfigDef("retention.bytes", "-1", "long", "delete old segments beyond this size per partition (-1: no limit)"),
    TopicConfigDef("segment.bytes", str(1 << 30), "int", "roll a new segment at this size"),
    TopicConfigDef("segment.ms", str(7 * DAY_MS), "long", "roll a new segment after this age"),
    TopicConfigDef("segment.index.bytes", str(10 * 1024 * 1024), "int", "offset index size limit"),
    TopicConfigDef("index.interval.bytes", "4096", "int", "bytes between sparse offset index entries"),
    TopicConfigDef("max.message.bytes", "1048588", "int", "largest record batch accepted"),
    TopicConfigDef("flush.messages", "1", "long",
                   "fsync after this many batches (1: every batch, before acks=all is answered)"),
    TopicConfigDef("flush.ms", str((1 << 63) - 1), "long", "fsync at least this often"),
    TopicConfigDef("min.insync.replicas", "1", "int", "replicas that must have a write for acks=all"),
    TopicConfigDef("message.timestamp.type", "CreateTime", "string", "timestamp stored with records",
                   ("CreateTime", "LogAppendTime")),
    TopicConfigDef("compression.type", "producer", "string", "batches are stored as the producer sent them",
                   ("producer",)),
    TopicConfigDef("delete.retention.ms", str(DAY_MS), "long", "how long tombstones are kept when compacting"),
    TopicConfigDef("min.compaction.lag.ms", "0", "long", "minimum age of a record before compaction"),
    TopicConfigDef("max.compaction.lag.ms", str((1 << 63) - 1), "long", "maximum time a record stays uncompacted"),
    TopicConfigDef("min.cleanable.dirty.ratio", "0.5", "double", "dirty share of the log that triggers compaction"),
    TopicConfigDef("file.delete.delay.ms", "60000", "long", "delay before a deleted segment's file is removed"),
    TopicConfigDef("unclean.leader.election.enable", "false", "boolean", "elect an out-of-sync replica as leader"),
    TopicConfigDef("message.timestamp.difference.max.ms", str((1 << 63) - 1), "long",
                   "largest allowed gap between a record's timestamp and the broker's clock"),
)
TOPIC_CONFIGS: Mapping[str, TopicConfigDef] = {d.name: d for d in _DEFS}


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Checked topic overrides; raises ConfigError naming the bad key."""
    out: dict[str, str] = {}
    for name, value in configs.items():
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise ConfigError(f"unknown topic config {name!r}")
        if value is None:
            continue
        definition.check(value)
        out[name] = value
    return out


# Broker-wide settings (`--config key=value` or VIGIL_BROKER_<KEY> with dots as underscores).
_BROKER_DEFAULTS: Mapping[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "auto.create.topics.enable": "true",
    "socket.request.max.bytes": str(100 * 1024 * 1024),
    "log.retention.check.interval.ms": "300000",
    "log.cleaner.backoff.ms": "15000",
    "log.flush.scheduler.interval.ms": "50",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.retention.minutes": "10080",
    "offsets.topic.num.partitions": "10",
    # broker-wide defaults for topic settings, as in Kafka
    "log.flush.interval.messages": TOPIC_CONFIGS["flush.messages"].default,
    "log.flush.interval.ms": TOPIC_CONFIGS["flush.ms"].default,
    "log.retention.ms": TOPIC_CONFIGS["retention.ms"].default,
    "log.retention.bytes": TOPIC_CONFIGS["retention.bytes"].default,
    "log.segment.bytes": TOPIC_CONFIGS["segment.bytes"].default,
    "log.roll.ms": TOPIC_CONFIGS["segment.ms"].default,
    "message.max.bytes": TOPIC_CONFIGS["max.message.bytes"].default,
    "log.cleanup.policy": TOPIC_CONFIGS["cleanup.policy"].default,
}

# broker setting -> the topic setting it supplies the default for
BROKER_TO_TOPIC: Mapping[str, str] = {
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "message.max.bytes": "max.message.bytes",
    "log.cleanup.policy": "cleanup.policy",
}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str = "127.0.0.1"
    advertised_port: int = 9092
    data_dir: Path = Path("var/broker")
    node_id: int = 0
    settings: Mapping[str, str] = field(default_factory=lambda: dict(_BROKER_DEFAULTS))

    @classmethod
    def from_args(
        cls,
        *,
        listen: tuple[str, int],
        advertise: tuple[str, int] | None,
        data_dir: str | Path,
        node_id: int,
        settings: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> BrokerConfig:
        merged = dict(_BROKER_DEFAULTS)
        env = os.environ if environ is None else environ
        for key in _BROKER_DEFAULTS:
            env_key = "VIGIL_BROKER_" + key.upper().replace(".", "_")
            if env_key in env:
                merged[key] = env[env_key]
        for item in settings:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"expected KEY=VALUE, got {item!r}")
            if key not in _BROKER_DEFAULTS:
                known = ", ".join(sorted(_BROKER_DEFAULTS))
                raise ConfigError(f"unknown broker setting {key!r} (known: {known})")
            merged[key] = value.strip()
        for key, topic_key in BROKER_TO_TOPIC.items():
            TOPIC_CONFIGS[topic_key].check(merged[key])
        adv = advertise or listen
        return cls(
            host=listen[0], port=listen[1], advertised_host=adv[0], advertised_port=adv[1],
            data_dir=Path(data_dir), node_id=node_id, settings=merged,
        )

    def setting_int(self, key: str) -> int:
        return int(self.settings[key])

    def topic_default(self, topic_key: str) -> str:
        """The broker-wide default of a topic setting."""
        for broker_key, tkey in BROKER_TO_TOPIC.items():
            if tkey == topic_key:
                return self.settings[broker_key]
        return TOPIC_CONFIGS[topic_key].default
