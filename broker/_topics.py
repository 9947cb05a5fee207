"""The cluster's metadata as this node keeps it: cluster id, topics, partitions, replicas.

Kept in ``<data-dir>/meta/`` as small JSON files, each written atomically (temp file,
fsync, rename), so a crash leaves either the old or the new version.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["InvalidTopicError", "TopicExistsError", "TopicMeta", "TopicRegistry", "write_atomic"]

_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class InvalidTopicError(ValueError):
    pass


class TopicExistsError(ValueError):
    pass


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_topic_name(name: str) -> None:
    if name in (".", "..") or not _LEGAL_NAME.match(name):
        raise InvalidTopicError(
            f"topic name {name!r} is illegal: use 1-249 of the characters a-z A-Z 0-9 . _ -"
        )


@dataclass(slots=True)
class TopicMeta:
    name: str
    topic_id: uuid.UUID
    replicas: list[list[int]]  # per partition: the replica node ids, preferred leader first
    leader_epochs: list[int]
    configs: dict[str, str] = field(default_factory=dict)  # overrides only
    internal: bool = False

    @property
    def partition_count(self) -> int:
        return len(self.replicas)

    @property
    def replication_factor(self) -> int:
        return len(self.replicas[0]) if self.replicas else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "topic_id": str(self.topic_id), "replicas": self.replicas,
            "leader_epochs": self.leader_epochs, "configs": self.configs, "internal": self.internal,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopicMeta:
        return cls(
            name=d["name"], topic_id=uuid.UUID(d["topic_id"]), replicas=d["replicas"],
            leader_epochs=d["leader_epochs"], configs=d.get("configs", {}),
            internal=d.get("internal", False),
        )


class TopicRegistry:
    """Topics by name and by id, persisted on every change."""

    def __init__(self, meta_dir: Path, node_id: int) -> None:
        self._dir = meta_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = self._load_cluster_id(node_id)
        self._topics: dict[str, TopicMeta] = {}
        path = self._dir / "topics.json"
        if path.exists():
            for d in json.loads(path.read_text())["topics"]:
                meta = TopicMeta.from_json(d)
                self._topics[meta.name] = meta
        self._by_id = {t.topic_id: t for t in self._topics.values()}

    def _load_cluster_id(self, node_id: int) -> str:
        path = self._dir / "meta.properties"
        props: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not line.startswith("#"):
                    props[key.strip()] = value.strip()
        stored_node = props.get("node.id")
        if stored_node is not None and int(stored_node) != node_id:
            raise ValueError(
                f"data directory {self._dir.parent} belongs to node {stored_node}, not node {node_id}"
            )
        cluster_id = props.get("cluster.id")
        if not cluster_id:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            text = f"version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
            write_atomic(path, text.encode())
        return cluster_id

    def _save(self) -> None:
        doc = {"topics": [t.to_json() for t in sorted(self._topics.values(), key=lambda t: t.name)]}
        write_atomic(self._dir / "topics.json", json.dumps(doc, indent=1).encode())

    def __contains__(self, name: object) -> bool:
        return name in self._topics

    def get(self, name: str) -> TopicMeta | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        return self._by_id.get(topic_id)

    def all(self) -> list[TopicMeta]:
        return sorted(self._topics.values(), key=lambda t: t.name)

    def create(
        self,
        name: str,
        replicas: list[list[int]],
        configs: dict[str, str],
        *,
        internal: bool = False,
    ) -> TopicMeta:
        check_topic_name(name)
        if name in self._topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        meta = TopicMeta(
            name=name, topic_id=uuid.uuid4(), replicas=replicas,
            leader_epochs=[0] * len(replicas), configs=dict(configs), internal=internal,
        )
        self._topics[name] = meta
        self._by_id[meta.topic_id] = meta
        self._save()
        return meta

    def delete(self, name: str) -> TopicMeta:
        meta = self._topics.pop(name)
        self._by_id.pop(meta.topic_id, None)
        self._save()
        return meta

    def add_partitions(self, name: str, replicas: list[list[int]]) -> TopicMeta:
        meta = self._topics[name]
        meta.replicas.extend(replicas)
        meta.leader_epochs.extend([0] * len(replicas))
        self._save()
        return meta

    def set_configs(self, name: str, configs: dict[str, str]) -> None:
        self._topics[name].configs = dict(configs)
        self._save()
