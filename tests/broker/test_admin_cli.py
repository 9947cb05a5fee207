"""`vigil topics|produce|consume` as a user runs them: real processes against a real broker."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from broker.admin import PartitionInfo, TopicInfo, format_describe, parse_configs
from tests.conftest import ROOT, BrokerProcess, free_port


def vigil(*args: str, bootstrap: str, stdin: str | None = None,
          timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args, "--bootstrap-server", bootstrap],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ------------------------------------------------------------------ pure functions


def test_format_describe_uses_the_kafka_topics_layout() -> None:
    topic = TopicInfo(
        name="vitals", topic_id="AAAAAAAAAAAAAAAAAAAAAQ",
        partitions=(PartitionInfo(0, 0, (0,), (0,)), PartitionInfo(1, None, (0, 1), (1,))),
        configs={"cleanup.policy": "compact", "retention.ms": "1000"},
    )
    assert format_describe([topic]) == (
        "Topic: vitals\tTopicId: AAAAAAAAAAAAAAAAAAAAAQ\tPartitionCount: 2\t"
        "ReplicationFactor: 1\tConfigs: cleanup.policy=compact,retention.ms=1000\n"
        "\tTopic: vitals\tPartition: 0\tLeader: 0\tReplicas: 0\tIsr: 0\n"
        "\tTopic: vitals\tPartition: 1\tLeader: none\tReplicas: 0,1\tIsr: 1\n"
    )


def test_parse_configs() -> None:
    assert parse_configs(["a=1", "b.c = x=y"]) == {"a": "1", "b.c": "x=y"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_configs(["novalue"])


# -------------------------------------------------------------------------- topics


def test_create_list_describe_delete(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    assert ok(vigil("topics", "create", "vitals", "--partitions", "3",
                    "--replication-factor", "1", bootstrap=b)) == "Created topic vitals.\n"
    assert "vitals" in ok(vigil("topics", "list", bootstrap=b)).splitlines()

    lines = ok(vigil("topics", "describe", "vitals", bootstrap=b)).splitlines()
    assert re.fullmatch(r"Topic: vitals\tTopicId: \S+\tPartitionCount: 3\t"
                        r"ReplicationFactor: 1\tConfigs: .*", lines[0]), lines[0]
    assert len(lines) == 4
    for n, line in enumerate(lines[1:]):
        assert re.fullmatch(rf"\tTopic: vitals\tPartition: {n}\tLeader: (\d+)\t"
                            r"Replicas: \1\tIsr: \1", line), line

    assert ok(vigil("topics", "delete", "vitals", bootstrap=b)) == "Deleted topic vitals.\n"
    deadline = time.monotonic() + 10
    while "vitals" in ok(vigil("topics", "list", bootstrap=b)).splitlines():
        assert time.monotonic() < deadline, "topic still listed after delete"
        time.sleep(0.2)


def test_describe_without_names_shows_every_topic(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    for name in ("alpha", "beta"):
        ok(vigil("topics", "create", name, "--partitions", "1", bootstrap=b))
    headers = [line for line in ok(vigil("topics", "describe", bootstrap=b)).splitlines()
               if line.startswith("Topic: ")]
    assert [h.split("\t")[0] for h in headers if "alpha" in h or "beta" in h] == [
        "Topic: alpha", "Topic: beta"]


def test_describe_shows_the_configs_given_at_create(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "gps", "--partitions", "1", "--replication-factor", "1",
             "--config", "retention.ms=86400000", bootstrap=b))
    header = ok(vigil("topics", "describe", "gps", bootstrap=b)).splitlines()[0]
    assert "retention.ms=86400000" in header.split("Configs: ", 1)[1]


def test_create_twice(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "dup", "--partitions", "1", bootstrap=b))
    one_line_error(vigil("topics", "create", "dup", "--partitions", "1", bootstrap=b),
                   "already exists")
    assert ok(vigil("topics", "create", "dup", "--partitions", "1", "--if-not-exists",
                    bootstrap=b)) == "Topic dup already exists.\n"


def test_unknown_topic_is_one_clear_error(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    one_line_error(vigil("topics", "describe", "ghost", bootstrap=b), "unknown topic", "ghost")
    one_line_error(vigil("topics", "delete", "ghost", bootstrap=b), "unknown topic", "ghost")
    one_line_error(vigil("produce", "--topic", "ghost", stdin="x\n", bootstrap=b),
                   "unknown topic", "ghost")
    one_line_error(vigil("consume", "--topic", "ghost", "--timeout", "1", bootstrap=b),
                   "unknown topic", "ghost")


def test_bad_config_is_rejected_before_any_request(broker: BrokerProcess) -> None:
    one_line_error(vigil("topics", "create", "x", "--config", "oops", bootstrap=broker.bootstrap),
                   "KEY=VALUE")


# ------------------------------------------------------------------ produce, consume


def test_keyed_lines_round_trip(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "hr", "--partitions", "1", bootstrap=b))
    ok(vigil("produce", "--topic", "hr", "--key-separator", ":",
             stdin="bed-1:72\nbed-2:88\nbed-1:value:with:colons\n", bootstrap=b))
    out = ok(vigil("consume", "--topic", "hr", "--from-beginning", "--print-key",
                   "--max-messages", "3", "--timeout", "20", bootstrap=b))
    assert out == "bed-1\t72\nbed-2\t88\nbed-1\tvalue:with:colons\n"


def test_unkeyed_lines_and_empty_lines(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "raw", "--partitions", "1", bootstrap=b))
    ok(vigil("produce", "--topic", "raw", stdin="one\n\nthree:3\n", bootstrap=b))
    out = ok(vigil("consume", "--topic", "raw", "--from-beginning", "--print-key",
                   "--max-messages", "3", "--timeout", "20", bootstrap=b))
    assert out == "null\tone\nnull\t\nnull\tthree:3\n"


def test_line_without_separator_fails_the_run_but_not_the_others(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "spo2", "--partitions", "1", bootstrap=b))
    result = vigil("produce", "--topic", "spo2", "--key-separator", ":",
                   stdin="a:97\nno separator here\nb:95\n", bootstrap=b)
    assert result.returncode == 1
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    out = ok(vigil("consume", "--topic", "spo2", "--from-beginning", "--max-messages", "2",
                   "--timeout", "20", bootstrap=b))
    assert out == "97\n95\n"


def test_consume_reads_every_partition_without_a_group(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "multi", "--partitions", "3", bootstrap=b))
    for p in range(3):
        ok(vigil("produce", "--topic", "multi", "--partition", str(p),
                 stdin=f"p{p}-a\np{p}-b\n", bootstrap=b))
    out = ok(vigil("consume", "--topic", "multi", "--from-beginning", "--timeout", "3",
                   bootstrap=b))
    assert sorted(out.splitlines()) == ["p0-a", "p0-b", "p1-a", "p1-b", "p2-a", "p2-b"]

    out = ok(vigil("consume", "--topic", "multi", "--partition", "1", "--offset", "1",
                   "--timeout", "3", bootstrap=b))
    assert out == "p1-b\n"


def test_consume_without_from_beginning_sees_only_new_records(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "tail", "--partitions", "1", bootstrap=b))
    ok(vigil("produce", "--topic", "tail", stdin="old\n", bootstrap=b))
    started = time.monotonic()
    result = vigil("consume", "--topic", "tail", "--timeout", "2", bootstrap=b)
    assert ok(result) == ""
    assert time.monotonic() - started < 30, "--timeout did not end an idle consumer"


def test_partition_out_of_range(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "small", "--partitions", "2", bootstrap=b))
    one_line_error(vigil("produce", "--topic", "small", "--partition", "5", stdin="x\n",
                         bootstrap=b), "no partition 5")


@pytest.mark.skip(reason="needs the group coordinator (The log, part 2: consumer groups)")
def test_group_consumer_resumes_where_it_committed(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "alerts", "--partitions", "2", bootstrap=b))
    ok(vigil("produce", "--topic", "alerts", stdin="a1\na2\na3\n", bootstrap=b))
    first = ok(vigil("consume", "--topic", "alerts", "--group", "pager", "--from-beginning",
                     "--timeout", "3", bootstrap=b))
    assert sorted(first.splitlines()) == ["a1", "a2", "a3"]
    ok(vigil("produce", "--topic", "alerts", stdin="a4\n", bootstrap=b))
    second = ok(vigil("consume", "--topic", "alerts", "--group", "pager", "--from-beginning",
                      "--timeout", "3", bootstrap=b))
    assert second == "a4\n"


# ------------------------------------------------------------------ no broker at all


@pytest.mark.parametrize("command", [
    ("topics", "list"),
    ("topics", "describe"),
    ("topics", "create", "t", "--partitions", "1"),
    ("topics", "delete", "t"),
    ("produce", "--topic", "t"),
    ("consume", "--topic", "t"),
])
def test_unreachable_broker_is_reported_quickly(command: tuple[str, ...]) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = vigil(*command, bootstrap=bootstrap, stdin="x\n", timeout=60)
    assert time.monotonic() - started < 20
    one_line_error(result, f"cannot reach the broker at {bootstrap}")
