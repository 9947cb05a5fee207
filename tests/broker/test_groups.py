"""Consumer groups as real clients see them: members in their own processes, crashes,
broker restarts, kcat's balanced consumer, static membership.

Members run `tests/broker/group_member.py` and report, as JSON lines, their assignment,
every record they process and every commit (synchronous, after each poll batch). Groups
whose members may crash use session.timeout.ms = 6000 (heartbeats every second), so a
SIGKILLed member's partitions move within seconds rather than librdkafka's default 45 s.
Before the crash, the doomed member stops committing (SIGUSR1) but goes on reading, so the
test sees that exactly what it read after its last commit is read again.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.conftest import ROOT, BrokerProcess

SESSION_TIMEOUT_MS = 6000
# After a crash: the session expires (6 s), the survivors hear of the rebalance on their
# next heartbeat (1 s) and rejoin; allow as long again for the rebalance itself.
TAKEOVER_LIMIT = 2 * SESSION_TIMEOUT_MS / 1000
JOIN_LIMIT = 60.0  # generous: only a broken coordinator comes near it
CLIENTS = ["confluent", "kafka-python", "aiokafka"]


# ------------------------------------------------------------------------ helpers


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> float:
    """Seconds until `condition()` held; fails with `what()` after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"after {timeout:g}s: {what()}")
        time.sleep(0.05)
    return time.monotonic() - started


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


class Feeder:
    """Produces to every partition in turn and remembers each partition's end offset."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "linger.ms": 1})
        self.ends = dict.fromkeys(range(partitions), 0)
        self.errors: list[str] = []
        self._sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.ends[msg.partition()] = max(self.ends[msg.partition()], msg.offset() + 1)

    def send(self, count: int) -> None:
        for _ in range(count):
            partition = self._sent % self.partitions
            self.producer.produce(self.topic, value=f"r{self._sent}".encode(),
                                  partition=partition, on_delivery=self._delivered)
            self._sent += 1
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        assert not self.errors, self.errors

    def start(self, per_second: int = 100) -> None:
        """Keep producing in the background until `stop()`."""
        def run() -> None:
            while not self._stop.is_set():
                self.send(per_second // 20)
                time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[int, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        assert self.producer.flush(30) == 0
        assert not self.errors, self.errors
        return dict(self.ends)


class Member:
    """A group member process (tests/broker/group_member.py) and what it has reported."""

    def __init__(self, name: str, client: str, bootstrap: str, group: str, topic: str,
                 log_dir: Path, *extra: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.log_path = log_dir / f"member-{name}.log"
        self._stderr = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.broker.group_member", client,
             "--bootstrap", bootstrap, "--group", group, "--topic", topic,
             "--client-id", name, *extra],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind]

    @property
    def assignment(self) -> set[int]:
        assigned = self.of("assigned")
        return set(assigned[-1]["partitions"]) if assigned else set()

    @property
    def seen(self) -> list[tuple[int, int]]:
        return [(p, o) for e in self.of("records") for p, o in e["records"]]

    @property
    def committed(self) -> dict[int, int]:
        """The last offset this member committed, per partition."""
        out: dict[int, int] = {}
        for e in self.of("committed"):
            out.update({int(p): o for p, o in e["offsets"].items()})
        return out

    def stop_committing(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def kill(self) -> float:
        """SIGKILL; returns when it happened (time.monotonic())."""
        self.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.proc.wait(10)
        self._finish()
        return at

    def stop(self) -> None:
        """SIGTERM: the member closes its consumer and leaves the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._finish()

    def _finish(self) -> None:
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def summary(self) -> str:
        failures = [e["error"] for e in self.of("commit_failed") + self.of("error")]
        try:  # the client's own log, for a member that is stuck
            stderr = self.log_path.read_text(errors="replace").splitlines()[-8:]
        except OSError:
            stderr = []
        return (f"{self.name}: alive={self.proc.poll() is None} "
                f"assignment={sorted(self.assignment)} seen={len(self.seen)} "
                f"committed={self.committed} errors={failures[:3]}"
                + "".join(f"\n    | {line}" for line in stderr))


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Callable[..., Member]]:
    """Starts members; every one still running at the end is stopped, by its own PID."""
    started: list[Member] = []

    def start(name: str, client: str, bootstrap: str, group: str, topic: str,
              *extra: str) -> Member:
        member = Member(name, client, bootstrap, group, topic, tmp_path, *extra)
        started.append(member)
        return member

    yield start
    for member in started:
        member.stop()


def balanced(group: list[Member], partitions: int) -> bool:
    """Every member holds some partitions, none twice, all of them together."""
    held = [m.assignment for m in group]
    return (all(held) and sum(map(len, held)) == partitions
            and set().union(*held) == set(range(partitions)))


def describe(group: list[Member], broker: BrokerProcess) -> str:
    tail = "\n".join(broker.log().splitlines()[-15:])
    return "\n".join(m.summary() for m in group) + f"\nbroker log tail:\n{tail}"


# --------------------------------------------------------------------- the tests


@pytest.mark.parametrize("client", CLIENTS)
def test_three_members_split_partitions_and_survive_a_crash(
        broker: BrokerProcess, members: Callable[..., Member], client: str) -> None:
    b, topic, group_id = broker.bootstrap, f"vitals-{client}", f"monitors-{client}"
    create_topic(b, topic, 6)
    feeder = Feeder(b, topic, 6)
    feeder.send(120)  # records waiting before anyone joins

    session = ("--session-timeout-ms", str(SESSION_TIMEOUT_MS))
    group = [members(f"{client}-{n}", client, b, group_id, topic, *session) for n in range(3)]
    wait_until(lambda: balanced(group, 6), JOIN_LIMIT,
               lambda: "the 3 members never split the 6 partitions\n" + describe(group, broker))
    assert sorted(len(m.assignment) for m in group) == [2, 2, 2]

    feeder.start()  # and records arriving during consumption
    victim, survivors = group[1], [group[0], group[2]]
    wait_until(lambda: victim.assignment <= set(victim.committed), 30,
               lambda: "the victim committed nothing\n" + describe(group, broker))
    # The victim goes on reading but commits no more, then dies: what it read since its
    # last commit must be read again by the survivors, and nothing else.
    victim.stop_committing()
    time.sleep(0.2)
    last_commit = victim.committed

    def uncommitted() -> set[tuple[int, int]]:
        return {(p, o) for p, o in victim.seen if o >= last_commit.get(p, 0)}

    wait_until(lambda: len(uncommitted()) >= 5, 30,
               lambda: "the victim read nothing more\n" + describe(group, broker))
    lost = victim.assignment
    killed_at = victim.kill()
    assert victim.committed == last_commit

    wait_until(lambda: balanced(survivors, 6), TAKEOVER_LIMIT,
               lambda: f"partitions {sorted(lost)} of the killed member did not move to the "
                       f"survivors\n" + describe(group, broker))
    takeover = max(e["t"] for m in survivors for e in m.of("assigned")) - killed_at

    ends = feeder.stop()
    wait_until(lambda: all(max((m.committed.get(p, 0) for m in survivors), default=0) == end
                           for p, end in ends.items()), 30,
               lambda: f"survivors did not catch up to {ends}\n" + describe(group, broker))

    seen = Counter(pair for m in group for pair in m.seen)
    for p, end in ends.items():
        offsets = {o for q, o in seen if q == p}
        assert offsets == set(range(end)), f"partition {p}: skipped {set(range(end)) - offsets}"
    twice = {pair for pair, n in seen.items() if n > 1}
    print(f"{client}: survivors own all partitions {takeover:.2f}s after the kill; "
          f"{len(twice)} records seen twice")
    unexpected = sorted((p, o) for p, o in twice if p not in lost or o < last_commit.get(p, 0))
    assert not unexpected, (
        f"records seen twice that were committed, or not the killed member's: {unexpected[:10]} "
        f"(killed member held {sorted(lost)}, last committed {last_commit})")
    assert uncommitted() <= twice, "survivors did not re-read what the victim never committed"

    for m in survivors:
        m.stop()
        assert m.proc.returncode == 0 and m.of("closed"), m.summary()


def test_committed_offsets_survive_a_broker_restart(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    create_topic(b, "bedside", 3)
    feeder = Feeder(b, "bedside", 3)
    feeder.send(30)  # offsets 0..9 in each partition

    def consumer() -> Consumer:
        c = Consumer({"bootstrap.servers": b, "group.id": "ward", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        c.subscribe(["bedside"])
        return c

    def read(c: Consumer, count: int, linger: float) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + JOIN_LIMIT
        while len(got) < count and time.monotonic() < deadline:
            got += [(m.partition(), m.offset()) for m in c.consume(100, 0.2) if not m.error()]
        end = time.monotonic() + linger  # anything more would be a re-read
        while time.monotonic() < end:
            got += [(m.partition(), m.offset()) for m in c.consume(100, 0.2) if not m.error()]
        return got

    first = consumer()
    assert len(read(first, 30, 0)) == 30
    first.commit(asynchronous=False)
    first.close()

    broker.restart()

    admin = AdminClient({"bootstrap.servers": b})
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ward")])
    committed = {tp.partition: tp.offset for tp in listed["ward"].result(10).topic_partitions}
    assert committed == {0: 10, 1: 10, 2: 10}

    feeder.send(15)  # offsets 10..14 in each partition
    second = consumer()
    try:
        got = read(second, 15, 1.0)
    finally:
        second.close()
    assert sorted(got) == [(p, o) for p in range(3) for o in range(10, 15)]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_kcat_balanced_consumer_consumes_and_commits(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    create_topic(b, "kcat-group", 3)
    feeder = Feeder(b, "kcat-group", 3)
    feeder.send(30)

    def kcat() -> list[str]:
        out = subprocess.run(
            ["kcat", "-b", b, "-G", "kcat-readers", "-X", "auto.offset.reset=earliest",
             "-e", "-q", "-f", "%p %o %s\n", "kcat-group"],
            capture_output=True, timeout=60, check=True)
        return out.stdout.decode().splitlines()

    first = kcat()
    assert sorted(first) == sorted(f"{n % 3} {n // 3} r{n}" for n in range(30))
    feeder.send(6)  # r30..r35
    second = kcat()  # resumes at the commit kcat made on its way out
    assert sorted(second) == sorted(f"{n % 3} {n // 3} r{n}" for n in range(30, 36))


def test_first_join_is_fast(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    create_topic(b, "first", 1)
    Feeder(b, "first", 1).send(1)
    consumer = Consumer({"bootstrap.servers": b, "group.id": "newcomer",
                         "auto.offset.reset": "earliest"})
    try:
        consumer.list_topics(timeout=10)  # connected, so only the join is timed
        started = time.monotonic()
        consumer.subscribe(["first"])
        msg = None
        while msg is None and time.monotonic() - started < JOIN_LIMIT:
            msg = consumer.poll(0.05)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    assert msg is not None and msg.error() is None, msg and msg.error()
    print(f"first record {elapsed:.3f}s after subscribe()")
    assert elapsed < 5


@pytest.mark.parametrize("restarted", [
    "leader",
    "follower",
])
def test_static_member_restarts_into_its_partitions_without_a_rebalance(
        broker: BrokerProcess, members: Callable[..., Member], restarted: str) -> None:
    b = broker.bootstrap
    create_topic(b, "pumps", 4)
    Feeder(b, "pumps", 4).send(40)
    session = ("--session-timeout-ms", str(SESSION_TIMEOUT_MS))
    # The first member to join leads the group (it computes the assignment).
    first = members("a", "confluent", b, "infusion", "pumps", *session, "--instance-id", "a")
    wait_until(lambda: first.assignment == {0, 1, 2, 3}, JOIN_LIMIT,
               lambda: describe([first], broker))
    second = members("b", "confluent", b, "infusion", "pumps", *session, "--instance-id", "b")
    wait_until(lambda: balanced([first, second], 4), JOIN_LIMIT,
               lambda: describe([first, second], broker))
    gone, other = (first, second) if restarted == "leader" else (second, first)
    held, changes = gone.assignment, len(other.of("assigned"))

    gone.kill()
    again = members(f"{gone.name}-again", "confluent", b, "infusion", "pumps", *session,
                    "--instance-id", gone.name)
    took = wait_until(lambda: bool(again.assignment), SESSION_TIMEOUT_MS / 1000,
                      lambda: "the restarted static member got no partitions within the "
                              "session timeout\n" + describe([again, other], broker))
    print(f"restarted static {restarted} assigned after {took:.2f}s")
    assert again.assignment == held
    time.sleep(1)
    assert other.of("assigned")[changes:] == [], "the other member went through a rebalance"
    assert other.assignment | again.assignment == {0, 1, 2, 3}
