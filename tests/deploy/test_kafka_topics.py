"""deploy/kafka/create-topics.sh: Vigil's topics, with their partitions and configs, on a
real broker (Vigil's, through `vigil topics create`); the same plan for kafka-topics.sh
and rpk; and the names are the ones the bridge, processors and API use."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from gateway.bridge import BridgeConfig
from processors.config import Topics
from tests.conftest import ROOT, BrokerProcess

SCRIPT = ROOT / "deploy" / "kafka" / "create-topics.sh"
COMPACTED = {"device-state", "device-status", "processors.checkpoints"}


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**clean, **(env or {})}, check=False)


def planned(*args: str) -> dict[str, list[str]]:
    """--dry-run: topic name -> the command that would create it."""
    done = run_script("--dry-run", *args)
    assert done.returncode == 0, done.stderr
    plan: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        argv = shlex.split(line)
        name = argv[argv.index("--topic") + 1] if "--topic" in argv else argv[3]
        plan[name] = argv
    return plan


def test_the_topics_are_the_ones_vigils_parts_read_and_write() -> None:
    bridge, processors = BridgeConfig(), Topics()
    used = {bridge.telemetry_topic, bridge.rejected_topic, bridge.status_topic, processors.telemetry,
            processors.alerts, processors.device_state, processors.checkpoints, processors.late}
    assert set(planned()) == used


def test_kafka_topics_gets_replication_factor_3_and_the_security_settings() -> None:
    plan = planned("--tool", "kafka-topics", "--command-config", "/etc/vigil/kafka-client.properties",
                   "--bootstrap", "k1:9093,k2:9093,k3:9093")
    for name, argv in plan.items():
        assert argv[0] == "kafka-topics.sh"
        assert argv[argv.index("--replication-factor") + 1] == "3", name
        assert argv[argv.index("--command-config") + 1] == "/etc/vigil/kafka-client.properties"
        assert argv[argv.index("--bootstrap-server") + 1] == "k1:9093,k2:9093,k3:9093"
        assert "--if-not-exists" in argv
        configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
        assert "min.insync.replicas=2" in configs
        assert ("cleanup.policy=compact" in configs) == (name in COMPACTED)
    telemetry = plan["telemetry"]
    checkpoints = plan["processors.checkpoints"]
    # the processors checkpoint partition p of telemetry to partition p of their topic
    assert telemetry[telemetry.index("--partitions") + 1] == checkpoints[checkpoints.index("--partitions") + 1]


def test_rpk_gets_the_same_topics_without_kafka_only_settings() -> None:
    plan = planned("--tool", "rpk")
    assert set(plan) == set(planned())
    for argv in plan.values():
        assert argv[:3] == ["rpk", "topic", "create"]
        assert argv[argv.index("-r") + 1] == "3"
        assert not any(a.startswith("min.insync.replicas") for a in argv)


@pytest.mark.parametrize("args", [("--replication-factor", "0"), ("--partitions", "x"),
                                  ("--tool", "zookeeper"), ("--tool", "vigil", "--command-config", "f"),
                                  ("--frobnicate",)])
def test_a_mistake_stops_it_before_anything_is_created(args: tuple[str, ...]) -> None:
    done = run_script(*args)
    assert done.returncode == 2
    assert "create-topics.sh" in done.stderr
    assert done.stdout == ""
    assert not [line for line in done.stderr.splitlines() if line.startswith("+ ")]  # nothing ran


def test_it_creates_every_topic_on_the_broker_once(broker: BrokerProcess, tmp_path: Path) -> None:
    vigil = tmp_path / "vigil"  # the `vigil` command of this checkout
    vigil.write_text(f"#!/bin/sh\ncd {shlex.quote(str(ROOT))} && exec {shlex.quote(sys.executable)} "
                     "-m deploy.cli \"$@\"\n")
    vigil.chmod(0o755)
    env = {"VIGIL": str(vigil), "VIGIL_BOOTSTRAP": broker.bootstrap}
    first = run_script("--replication-factor", "1", "--partitions", "4", env=env)
    assert first.returncode == 0, first.stderr
    again = run_script("--replication-factor", "1", "--partitions", "8", env=env)
    assert again.returncode == 0, again.stderr  # existing topics are left alone

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = admin.list_topics(timeout=10).topics
    expected_partitions = {"telemetry": 4, "alerts": 4, "device-state": 4, "device-status": 4,
                           "processors.checkpoints": 4, "telemetry.rejected": 3, "telemetry.late": 3}
    assert {t: len(topics[t].partitions) for t in expected_partitions if t in topics} == expected_partitions
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in expected_partitions]
    configs = {r.name: {k: v.value for k, v in f.result(timeout=10).items()}
               for r, f in admin.describe_configs(resources).items()}
    for name, c in configs.items():
        assert c["cleanup.policy"] == ("compact" if name in COMPACTED else "delete"), name
        assert c["min.insync.replicas"] == "1", name
    assert configs["telemetry"]["retention.ms"] == "604800000"
    assert configs["alerts"]["retention.ms"] == "2592000000"
    assert configs["processors.checkpoints"]["max.message.bytes"] == "67108864"
    assert configs["device-state"]["segment.ms"] == "3600000"
