"""`vigil topics|produce|consume` as a user runs them: real processes against a real broker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from broker.admin import (
    GroupDescription,
    GroupMember,
    GroupOffset,
    PartitionInfo,
    TopicInfo,
    format_describe,
    format_group_describe,
    parse_configs,
)
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


def test_format_group_describe_lists_members_then_partitions() -> None:
    member = GroupMember("m-1", "monitor", "/127.0.0.1", None, (("hr", 0), ("hr", 1)))
    group = GroupDescription(
        group_id="pager", state="Stable", assignor="range", coordinator=0, members=(member,),
        offsets=(GroupOffset("hr", 0, 3, 5, member), GroupOffset("hr", 1, None, 2, member)),
    )
    assert format_group_describe([group]).splitlines() == [
        "Group: pager\tState: Stable\tAssignor: range\tCoordinator: 0",
        "",
        "MEMBER-ID  CLIENT-ID  HOST        INSTANCE-ID  PARTITIONS",
        "m-1        monitor    /127.0.0.1  -            hr:0,1",
        "",
        "TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST        CLIENT-ID",
        "hr     0          3               5               2    m-1          /127.0.0.1  monitor",
        "hr     1          -               2               -    m-1          /127.0.0.1  monitor",
    ]


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


# -------------------------------------------------------------------------- groups


def table(lines: list[str], header: str) -> list[list[str]]:
    """The rows (split on whitespace) of the table whose header starts with `header`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_groups_list_describe_delete(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "alerts", "--partitions", "2", bootstrap=b))
    ok(vigil("produce", "--topic", "alerts", "--partition", "0", stdin="a1\na2\na3\n", bootstrap=b))
    ok(vigil("produce", "--topic", "alerts", "--partition", "1", stdin="b1\nb2\n", bootstrap=b))
    ok(vigil("consume", "--topic", "alerts", "--group", "pager", "--from-beginning",
             "--max-messages", "5", "--timeout", "10", bootstrap=b))
    ok(vigil("produce", "--topic", "alerts", "--partition", "0", stdin="a4\na5\n", bootstrap=b))

    listed = ok(vigil("groups", "list", bootstrap=b)).splitlines()
    assert listed[0].split() == ["GROUP", "STATE", "PROTOCOL-TYPE"]
    assert ["pager", "Empty", "consumer"] in [line.split() for line in listed[1:]]

    lines = ok(vigil("groups", "describe", "pager", bootstrap=b)).splitlines()
    assert lines[0].startswith("Group: pager\tState: Empty\t")
    assert "Consumer group 'pager' has no active members." in lines
    assert table(lines, "TOPIC") == [
        ["alerts", "0", "3", "5", "2", "-", "-", "-"],  # two records not yet read
        ["alerts", "1", "2", "2", "0", "-", "-", "-"],
    ]

    assert ok(vigil("groups", "delete", "pager", bootstrap=b)) == "Deleted group pager.\n"
    assert "pager" not in ok(vigil("groups", "list", bootstrap=b))
    one_line_error(vigil("groups", "describe", "pager", bootstrap=b), "unknown group", "pager")


def test_groups_describe_shows_live_members_and_refuses_to_delete_them(
        broker: BrokerProcess) -> None:
    b = broker.bootstrap
    ok(vigil("topics", "create", "hr", "--partitions", "2", bootstrap=b))
    ok(vigil("produce", "--topic", "hr", "--partition", "1", stdin="72\n", bootstrap=b))
    member = subprocess.Popen(
        [sys.executable, "-m", "tests.broker.group_member", "confluent", "--bootstrap", b,
         "--group", "ward", "--topic", "hr", "--client-id", "bedside-monitor"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True)
    try:
        assert member.stdout is not None
        for line in member.stdout:  # until it has read the record and committed
            if json.loads(line)["event"] == "committed":
                break
        lines = ok(vigil("groups", "describe", "ward", bootstrap=b)).splitlines()
        assert lines[0].startswith("Group: ward\tState: Stable\t")
        (member_row,) = table(lines, "MEMBER-ID")
        member_id = member_row[0]
        assert member_row[1:] == ["bedside-monitor", member_row[2], "-", "hr:0,1"]
        assert table(lines, "TOPIC") == [
            ["hr", "0", "-", "0", "-", member_id, member_row[2], "bedside-monitor"],
            ["hr", "1", "1", "1", "0", member_id, member_row[2], "bedside-monitor"],
        ]
        one_line_error(vigil("groups", "delete", "ward", bootstrap=b), "ward",
                       "still has active members")
    finally:
        member.terminate()
        member.communicate(timeout=30)


def test_unknown_group_is_one_clear_error(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    one_line_error(vigil("groups", "describe", "ghost", bootstrap=b), "unknown group", "ghost")
    one_line_error(vigil("groups", "delete", "ghost", bootstrap=b), "unknown group", "ghost")


# ------------------------------------------------------------------ no broker at all


@pytest.mark.parametrize("command", [
    ("topics", "list"),
    ("topics", "describe"),
    ("topics", "create", "t", "--partitions", "1"),
    ("topics", "delete", "t"),
    ("produce", "--topic", "t"),
    ("consume", "--topic", "t"),
    ("groups", "list"),
    ("groups", "describe", "g"),
    ("groups", "delete", "g"),
])
def test_unreachable_broker_is_reported_quickly(command: tuple[str, ...]) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = vigil(*command, bootstrap=bootstrap, stdin="x\n", timeout=60)
    assert time.monotonic() - started < 20
    one_line_error(result, f"cannot reach the broker at {bootstrap}")
