"""Stream-processing benchmark: Vigil's window engine against Quix Streams, over Kafka.

    PYTHONPATH=. .venv/bin/python tests/perf/bench_processors.py [--events 1000000]
        [--keys 1000] [--rounds 1] [--engines vigil quix [quix-nochangelog] [plain]]
        [--json PATH]

The job: a 10-second tumbling mean of ``data.value`` per device, final results only.

1. Starts a Vigil broker (``vigil broker``, its durable file log in a temporary directory)
   on a free loopback port, creates ``bench-telemetry`` (4 partitions) and the output
   topics, and produces N JSON events ``{"device","seq","ts","kind":"bench","data":{"value"}}``
   keyed by device (1,000 devices, each one event per second of event time, up to 0.5 s
   out of order: ``bench_windows.make_events``), record timestamp = ``ts``.
2. ``vigil``, in its own process: a confluent-kafka consumer (``consume(num_messages=...)``,
   orjson) feeding one `WindowEngine` per partition (tumbling 10 s ``mean("value")`` keyed
   by device, Emit.FINAL, 1 s out-of-orderness, dedup by (device, seq)), each final result
   produced as JSON to ``bench-means``. Every 5 s (Quix's default commit interval) and at
   the end it checkpoints: results flushed, engine snapshots written to its state
   directory, input offsets committed. When all N events are in, an ``advance`` far in the
   future closes the last windows (the end of a bounded input).
3. ``quix``, in its own process (Quix Streams, own consumer group, from the earliest
   offset, state dir in the temporary directory, changelog topics on as by default):
   ``sdf.apply(value).tumbling_window(10_000, grace_ms=1_000).mean().final()`` to
   ``bench-means-quix``; window time is the record timestamp (Quix's default), windows
   close per key (its default). It stops once it has processed N input events. Quix
   cannot close the last window of each key without later events, so it emits fewer.
   ``quix-nochangelog`` (only if asked for with --engines): the same with
   ``use_changelog_topics=False``. ``plain`` (only if asked for): a ceiling, not a
   processor: the same consumer and orjson into a dict of sums, every mean produced to
   ``bench-means-plain`` at the end; no watermark, dedup or checkpoints.
4. Reads the output topics back and checks each run's means against a plain recomputation
   from the input (``bench_windows.run_baseline``): Vigil (and plain) must emit every
   window, no run a window the input lacks, and Vigil and each Quix run must agree on the
   mean of every (device, window) that both emitted.

Each worker reports its wall time and CPU (user+sys of its whole process, librdkafka's
threads included, from getrusage) from its first record until its job is done: outputs
flushed, offsets committed, consumer closed. "incl. startup" adds connecting, the group
join and, for Quix, opening its state stores. With --rounds R the engines take turns R
times; the median run of each is reported, and the Vigil/Quix ratio of each round. Every
process started here is stopped, by PID, before the script exits. Exit status 2 if a
correctness check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_broker import Broker, cpu_seconds, machine, running, vigil_broker  # noqa: E402
from bench_windows import make_events, run_baseline  # noqa: E402

log = logging.getLogger("vigil.perf")

TOPIC = "bench-telemetry"
OUT_VIGIL = "bench-means"
OUT_QUIX = "bench-means-quix"
OUT_QUIX_NOCHANGELOG = "bench-means-quix-nochangelog"
OUT_PLAIN = "bench-means-plain"
QUIX_OUTPUTS = {"quix": OUT_QUIX, "quix-nochangelog": OUT_QUIX_NOCHANGELOG}
ENGINES = ("vigil", "quix", "quix-nochangelog", "plain")
PARTITIONS = 4
SIZE_MS = 10_000
OUT_OF_ORDER_MS = 1_000
COMMIT_INTERVAL = 5.0  # seconds between checkpoints, as Quix's default commit_interval
STALL_TIMEOUT = 60.0  # seconds without a record before a worker gives up
WORKER_TIMEOUT = 1800.0  # seconds a worker may take in all
BATCH = 10_000  # records per consume() call

CONSUMER_TUNING: dict[str, Any] = {
    "fetch.max.bytes": 50 * 1024 * 1024,
    "max.partition.fetch.bytes": 10 * 1024 * 1024,
    "queued.min.messages": 200_000,
    "fetch.wait.max.ms": 100,
}
PRODUCER_TUNING: dict[str, Any] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "compression.type": "none",
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


# ---------------------------------------------------------------------------- measure


def process_cpu() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Clock:
    """Wall and CPU readings at the worker's start, its first record and its end."""

    started: tuple[float, float] = (0.0, 0.0)
    first: tuple[float, float] | None = None
    ended: tuple[float, float] = (0.0, 0.0)

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), process_cpu()

    def start(self) -> None:
        self.started = self.now()

    def first_record(self) -> None:
        if self.first is None:
            self.first = self.now()

    def end(self) -> None:
        self.ended = self.now()


@dataclass(frozen=True)
class WorkerResult:
    engine: str  # one of ENGINES
    events: int
    seconds: float  # first record -> job done (outputs flushed, offsets committed, closed)
    cpu_seconds: float  # over the same interval
    startup_seconds: float  # worker start -> first record
    startup_cpu_seconds: float
    results: int  # window results the worker sent

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0

    @property
    def events_per_s_with_startup(self) -> float:
        total = self.seconds + self.startup_seconds
        return self.events / total if total else 0.0

    @classmethod
    def from_clock(cls, engine: str, events: int, clock: Clock, results: int) -> WorkerResult:
        first = clock.first or clock.ended
        return cls(engine, events, clock.ended[0] - first[0], clock.ended[1] - first[1],
                   first[0] - clock.started[0], first[1] - clock.started[1], results)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s,
                "cpu_us_per_event": self.cpu_us_per_event,
                "events_per_s_with_startup": self.events_per_s_with_startup}


# ------------------------------------------------------------------------------ input


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        request_timeout=15)
    for future in futures.values():
        future.result(timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # wait until every partition has a leader
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and topics[n].error is None
               and len(topics[n].partitions) == partitions for n in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {list(names)} have no metadata after create")


Event = tuple[str, int, int, dict[str, Any]]  # device, seq, ts, data


def encode_events(events: Sequence[Event]) -> list[tuple[bytes, bytes, int]]:
    """(key, JSON value, timestamp ms) of each event, in production order."""
    return [(device.encode(), orjson.dumps({"device": device, "seq": seq, "ts": ts,
                                            "kind": "bench", "data": data}), ts)
            for device, seq, ts, data in events]


def produce_events(bootstrap: str, records: Sequence[tuple[bytes, bytes, int]]) -> float:
    """Send the events to TOPIC (partitioned by key, librdkafka's default partitioner) and
    wait for every acknowledgement; returns the seconds it took."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **PRODUCER_TUNING})
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None and len(failures) < 5:
            failures.append(str(err))

    began = time.perf_counter()
    for key, value, ts in records:
        while True:
            try:
                producer.produce(TOPIC, value, key, timestamp=ts, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(STALL_TIMEOUT)
    if left or failures:
        raise RuntimeError(f"produce to {TOPIC}: {left} undelivered, errors: {failures}")
    return time.perf_counter() - began


# ----------------------------------------------------------------------------- output


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) in `topic`, from the beginning up to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, **CONSUMER_TUNING})
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in meta.partitions}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        out: list[tuple[bytes | None, bytes]] = []
        last_progress = time.monotonic()
        while todo:
            batch = consumer.consume(num_messages=BATCH, timeout=1.0)
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"reading {topic}: {msg.error()}")
                out.append((msg.key(), msg.value()))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_TIMEOUT:
                raise RuntimeError(f"reading {topic} stalled; partitions left: {sorted(todo)}")
        return out
    finally:
        consumer.close()


WindowMeans = dict[tuple[str, int], float]  # (device, window start) -> mean


def vigil_means(records: Sequence[tuple[bytes | None, bytes]]) -> WindowMeans:
    out: WindowMeans = {}
    for _key, value in records:
        r = orjson.loads(value)
        out[(r["device"], r["start"])] = r["mean"]
    return out


def quix_means(records: Sequence[tuple[bytes | None, bytes]]) -> WindowMeans:
    out: WindowMeans = {}
    for key, value in records:
        if key is None:
            raise RuntimeError("a Quix result without a key")
        r = orjson.loads(value)
        out[(key.decode(), r["start"])] = r["value"]
    return out


@dataclass(frozen=True)
class Check:
    """The means of one run (left) against another's or the reference's (right)."""

    name: str
    left: int  # windows emitted
    right: int
    both: int
    differing_count: int  # windows in both whose means differ
    differing: list[tuple[str, int, float, float]]  # up to 10: (device, start, left, right)
    only_left: int
    only_right: int

    @property
    def agree(self) -> bool:
        return not self.differing_count


def compare(name: str, left: WindowMeans, right: WindowMeans,
            tolerance: float = 1e-9) -> Check:
    both = left.keys() & right.keys()
    bad = [(k[0], k[1], left[k], right[k]) for k in sorted(both)
           if abs(left[k] - right[k]) > tolerance * max(1.0, abs(right[k]))]
    return Check(name, len(left), len(right), len(both), len(bad), bad[:10],
                 len(left.keys() - right.keys()), len(right.keys() - left.keys()))


# ----------------------------------------------------------------------------- workers


def run_vigil(bootstrap: str, events: int, group: str, state_dir: Path) -> WorkerResult:
    """The Vigil job: confluent-kafka in, one WindowEngine per partition, JSON results out.
    Every COMMIT_INTERVAL and at the end, a checkpoint: the results flushed, each engine's
    snapshot written to `state_dir`, then the input offsets committed."""
    from processors.windows import Emit, Output, Query, Tumbling, WindowEngine, mean

    clock = Clock()
    clock.start()
    query = Query("mean", Tumbling(SIZE_MS), {"mean": mean("value")}, Emit.FINAL)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, **CONSUMER_TUNING,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **PRODUCER_TUNING})
    engines: dict[int, WindowEngine] = {}
    produce = producer.produce
    sent = 0

    def emit(output: Output) -> None:
        nonlocal sent
        for r in output.results:
            produce(OUT_VIGIL, orjson.dumps({"device": r.key, "start": r.start, "end": r.end,
                                             "mean": r.values["mean"]}), r.key)
        sent += len(output.results)
        producer.poll(0)

    def checkpoint() -> None:
        left = producer.flush(STALL_TIMEOUT)
        if left:
            raise RuntimeError(f"vigil worker: {left} results undelivered")
        for partition, engine in engines.items():
            path = state_dir / f"{TOPIC}-{partition}.snapshot"
            path.with_suffix(".tmp").write_bytes(engine.snapshot())
            path.with_suffix(".tmp").replace(path)
        consumer.commit(asynchronous=False)

    loads = orjson.loads
    consumer.subscribe([TOPIC])
    try:
        seen = 0
        last_progress = time.monotonic()
        next_checkpoint = last_progress + COMMIT_INTERVAL
        while seen < events:
            batch = consumer.consume(num_messages=min(BATCH, events - seen), timeout=1.0)
            if not batch:
                if time.monotonic() - last_progress > STALL_TIMEOUT:
                    raise RuntimeError(f"vigil worker stalled at {seen}/{events} events")
                continue
            clock.first_record()
            for msg in batch:
                value = msg.value()
                if value is None:
                    raise RuntimeError(f"consume {TOPIC}: {msg.error()}")
                partition = msg.partition()
                engine = engines.get(partition)
                if engine is None:
                    engine = engines[partition] = WindowEngine(
                        [query], max_out_of_order_ms=OUT_OF_ORDER_MS, idle_timeout_ms=1)
                e = loads(value)
                output = engine.process(e["device"], e["seq"], e["ts"], e["data"])
                if output.results:
                    emit(output)
            seen += len(batch)
            last_progress = time.monotonic()
            if last_progress >= next_checkpoint:  # the batch is processed: its offsets may go
                checkpoint()
                next_checkpoint = last_progress + COMMIT_INTERVAL
        # End of the bounded input: a wall-clock tick far past every window closes them all.
        for engine in engines.values():
            engine.advance(0)
            emit(engine.advance(2**52))
        checkpoint()
    finally:
        consumer.close()  # leaves the group; Quix's run() returns after the same
    clock.end()
    late = sum(e.late_count for e in engines.values())
    if late:
        log.warning("vigil worker: %d late events", late)
    return WorkerResult.from_clock("vigil", seen, clock, sent)


def run_plain(bootstrap: str, events: int, group: str) -> WorkerResult:
    """A ceiling, not a processor: the same consumer and orjson, then a dict of sums per
    (device, window start), every mean produced at the end. No watermark, lateness,
    dedup or checkpoints."""
    clock = Clock()
    clock.start()
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, **CONSUMER_TUNING,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **PRODUCER_TUNING})
    sums: dict[tuple[str, int], list[float]] = {}
    loads = orjson.loads
    consumer.subscribe([TOPIC])
    try:
        seen = 0
        last_progress = time.monotonic()
        while seen < events:
            batch = consumer.consume(num_messages=min(BATCH, events - seen), timeout=1.0)
            if not batch:
                if time.monotonic() - last_progress > STALL_TIMEOUT:
                    raise RuntimeError(f"plain worker stalled at {seen}/{events} events")
                continue
            clock.first_record()
            for msg in batch:
                value = msg.value()
                if value is None:
                    raise RuntimeError(f"consume {TOPIC}: {msg.error()}")
                e = loads(value)
                ts = e["ts"]
                wkey = (e["device"], ts - ts % SIZE_MS)
                acc = sums.get(wkey)
                if acc is None:
                    sums[wkey] = [e["data"]["value"], 1]
                else:
                    acc[0] += e["data"]["value"]
                    acc[1] += 1
            seen += len(batch)
            last_progress = time.monotonic()
        for (device, start), (total, n) in sums.items():
            producer.produce(OUT_PLAIN, orjson.dumps({"device": device, "start": start,
                                                      "end": start + SIZE_MS,
                                                      "mean": total / n}), device)
            producer.poll(0)
        if producer.flush(STALL_TIMEOUT):
            raise RuntimeError("plain worker: results undelivered")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    clock.end()
    return WorkerResult.from_clock("plain", seen, clock, len(sums))


def run_quix(bootstrap: str, events: int, group: str, state_dir: Path,
             changelog: bool = True) -> WorkerResult:
    """The same job in Quix Streams, stopped after `events` input messages. With
    `changelog` (Quix's default) every state update also goes to a changelog topic."""
    from quixstreams import Application

    name = "quix" if changelog else "quix-nochangelog"
    clock = Clock()
    clock.start()
    processed = 0
    sent = 0
    app: Application | None = None

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        nonlocal processed
        if not processed:
            clock.first_record()  # the first record processed: close enough to its arrival
        processed += 1
        if processed >= events and app is not None:
            app.stop()

    def count_result(result: Any) -> None:
        nonlocal sent
        sent += 1

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        use_changelog_topics=changelog,
        on_message_processed=on_processed,
        consumer_extra_config=dict(CONSUMER_TUNING),
        producer_extra_config=dict(PRODUCER_TUNING),
    )
    source = app.topic(TOPIC, value_deserializer="json", key_deserializer="str")
    sink = app.topic(QUIX_OUTPUTS[name], value_serializer="json", key_serializer="str")
    sdf = app.dataframe(source)
    sdf = sdf.apply(lambda event: event["data"]["value"])
    sdf = sdf.tumbling_window(SIZE_MS, grace_ms=OUT_OF_ORDER_MS).mean().final()
    sdf = sdf.update(count_result)
    sdf.to_topic(sink)
    app.run()  # returns after stop(): last checkpoint committed, consumer and state closed
    clock.end()
    if processed < events:
        raise RuntimeError(f"{name} worker stopped after {processed}/{events} events")
    return WorkerResult.from_clock(name, processed, clock, sent)


def worker_main(args: argparse.Namespace) -> int:
    """Run one engine's job and write its WorkerResult as JSON to --result."""
    group = f"bench-{args.worker}-{uuid.uuid4().hex[:8]}"
    state_dir = Path(args.state_dir)
    if args.worker == "vigil":
        result = run_vigil(args.bootstrap, args.events, group, state_dir)
    elif args.worker == "plain":
        result = run_plain(args.bootstrap, args.events, group)
    else:
        result = run_quix(args.bootstrap, args.events, group, state_dir,
                          changelog=args.worker == "quix")
    Path(args.result).write_text(json.dumps(asdict(result)))
    return 0


@contextmanager
def worker_process(name: str, bootstrap: str, events: int, workdir: Path) -> Iterator[Path]:
    """Run a worker (this script with --worker) to completion; yields its result file."""
    run = f"{name}-{uuid.uuid4().hex[:6]}"
    result = workdir / f"{run}-result.json"
    state = workdir / f"{run}-state"
    state.mkdir()
    log_path = workdir / f"{run}.log"
    argv = [sys.executable, __file__, "--worker", name, "--bootstrap", bootstrap,
            "--events", str(events), "--state-dir", str(state), "--result", str(result)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        code = proc.wait(WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{name} worker failed (exit {code}):\n{tail}")
    yield result


@dataclass(frozen=True)
class Run:
    result: WorkerResult
    broker_cpu_seconds: float  # the broker's CPU while the worker ran, startup included
    round: int = 0


def run_worker(name: str, broker: Broker, events: int, workdir: Path, round_: int) -> Run:
    broker_cpu = cpu_seconds(broker.pid)
    print(f"running {name} over {events:,} events ...", file=sys.stderr)
    with worker_process(name, broker.bootstrap, events, workdir) as path:
        result = WorkerResult(**json.loads(path.read_text()))
    log.info("%s: %.0f events/s, %.1f CPU-us/event", name, result.events_per_s,
             result.cpu_us_per_event)
    return Run(result, cpu_seconds(broker.pid) - broker_cpu, round_)


def median_run(runs: Sequence[Run]) -> Run:
    return sorted(runs, key=lambda r: r.result.events_per_s)[len(runs) // 2]


# ----------------------------------------------------------------------------- report


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return float("nan")


def format_report(info: dict[str, Any], events: int, keys: int, rounds: int,
                  produce_s: float, runs: Sequence[Run], every: Sequence[Run],
                  checks: Sequence[Check]) -> str:
    lines = [
        f"machine: the project's 'python' machine kind (2 cores, 24 GiB as provisioned); "
        f"CPU model {info['cpu_model']!r}, os.cpu_count()={info['cores']}, "
        f"MemTotal {info['mem_gib']:.1f} GiB",
        f"Python {info['python']}, librdkafka {info['librdkafka']}, quixstreams "
        f"{info['quixstreams']}; load average before the run {info['loadavg']}, "
        f"after {info['loadavg_after']}",
        f"job: 10 s tumbling mean per device, {events:,} events, {keys:,} devices, "
        f"{PARTITIONS} partitions, Vigil's broker on loopback; input produced in "
        f"{produce_s:.1f} s; median of {rounds} round(s)",
        "",
        f"{'engine':<17} {'events/s':>9} {'CPU-us/event':>12} {'seconds':>8} {'CPU s':>6} "
        f"{'startup s':>9} {'events/s incl. startup':>22} {'windows out':>11} "
        f"{'broker CPU s':>12}",
    ]
    for run in runs:
        r = run.result
        lines.append(
            f"{r.engine:<17} {r.events_per_s:>9,.0f} {r.cpu_us_per_event:>12.1f} "
            f"{r.seconds:>8.2f} {r.cpu_seconds:>6.2f} {r.startup_seconds:>9.2f} "
            f"{r.events_per_s_with_startup:>22,.0f} {r.results:>11,} "
            f"{run.broker_cpu_seconds:>12.2f}")
    by_name = {run.result.engine: run.result for run in runs}
    vigil = by_name.get("vigil")
    if vigil is not None and len(by_name) > 1:
        lines += ["", f"{'Vigil vs ...':<17} {'events/s: Vigil/it':>18} "
                      f"{'CPU per event: it/Vigil':>24} {'incl. startup: Vigil/it':>24}"]
        for name, other in by_name.items():
            if name == "vigil":
                continue
            lines.append(
                f"{name:<17} {vigil.events_per_s / other.events_per_s:>17.1f}x "
                f"{other.cpu_us_per_event / vigil.cpu_us_per_event:>23.1f}x "
                f"{vigil.events_per_s_with_startup / other.events_per_s_with_startup:>23.1f}x")
        if rounds > 1:
            lines += ["", "events/s Vigil/it, round by round (neighbours in time share the "
                          "machine's load):"]
            lines += [f"{name:<17} " + "  ".join(f"{x:.1f}x" for x in ratios)
                      for name, ratios in round_ratios(every).items()]
    lines += ["", "correctness: each run's means against a plain recomputation from the input "
                  "(bench_windows.run_baseline), and Vigil's against each Quix run's"]
    for c in checks:
        verdict = "agree" if c.agree else f"DIFFER in {c.differing_count:,}"
        if c.name.startswith("vigil vs"):
            lines.append(f"  {c.name}: {c.both:,} windows in both, whose means {verdict}")
        else:
            lines.append(f"  {c.name}: {c.left:,} windows emitted of {c.right:,}; means {verdict}"
                         f"; {c.only_right:,} not emitted, {c.only_left:,} not in the input")
        lines += [f"    {d} window {start}: {left!r} vs {right!r}"
                  for d, start, left, right in c.differing]
    if any(c.only_right for c in checks if c.name.startswith("quix")):
        lines.append("  (Quix closes a window only when a later event of the same key arrives, "
                     "so the last window of each device stays open)")
    if not checks_pass(checks):
        lines.append("  CHECK FAILED")
    return "\n".join(lines)


def round_ratios(every: Sequence[Run]) -> dict[str, list[float]]:
    """Per other engine, Vigil's events/s over its own in each round."""
    vigil = {r.round: r.result for r in every if r.result.engine == "vigil"}
    out: dict[str, list[float]] = {}
    for run in every:
        mine = vigil.get(run.round)
        if run.result.engine != "vigil" and mine is not None and run.result.events_per_s:
            out.setdefault(run.result.engine, []).append(
                mine.events_per_s / run.result.events_per_s)
    return out


# -------------------------------------------------------------------------------- CLI


def bench(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    info = machine()
    info["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["quixstreams"] = version("quixstreams")
    info["mem_gib"] = mem_total_gib()
    engines: list[str] = args.engines
    print(f"encoding {args.events:,} events ...", file=sys.stderr)
    events = make_events(args.events, args.keys)
    reference: WindowMeans = run_baseline(events)  # a plain dict recomputation
    records = encode_events(events)
    del events
    every: list[Run] = []
    medians: list[Run] = []
    outputs: dict[str, WindowMeans] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-proc-") as tmp:
        workdir = Path(tmp)
        broker = vigil_broker(workdir)
        try:
            with running(broker):
                create_topics(broker.bootstrap,
                              [TOPIC, OUT_VIGIL, OUT_PLAIN, *QUIX_OUTPUTS.values()], PARTITIONS)
                print(f"producing to {TOPIC} on {broker.bootstrap} ...", file=sys.stderr)
                produce_s = produce_events(broker.bootstrap, records)
                del records
                for round_ in range(args.rounds):  # engines take turns, each round
                    every += [run_worker(name, broker, args.events, workdir, round_)
                              for name in engines]
                for name in engines:
                    medians.append(median_run([r for r in every if r.result.engine == name]))
                    topic = {"vigil": OUT_VIGIL, "plain": OUT_PLAIN}.get(name) or QUIX_OUTPUTS[name]
                    parse = quix_means if name in QUIX_OUTPUTS else vigil_means
                    outputs[name] = parse(read_topic(broker.bootstrap, topic))
        except (RuntimeError, KafkaException) as exc:
            print(f"bench: {exc}\n{broker.log_tail()}", file=sys.stderr)
            return 1
    info["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    checks = [compare(name, means, reference) for name, means in outputs.items()]
    checks += [compare(f"vigil vs {name}", outputs["vigil"], means)
               for name, means in outputs.items() if name in QUIX_OUTPUTS and "vigil" in outputs]
    print(format_report(info, args.events, args.keys, args.rounds, produce_s, medians,
                        every, checks))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info, "events": args.events, "keys": args.keys,
            "partitions": PARTITIONS, "rounds": args.rounds, "produce_seconds": produce_s,
            "results": [{**r.result.as_json(), "broker_cpu_seconds": r.broker_cpu_seconds}
                        for r in medians],
            "every_round": [{**r.result.as_json(), "broker_cpu_seconds": r.broker_cpu_seconds,
                             "round": r.round} for r in every],
            "vigil_over_by_round": round_ratios(every),
            "checks": [asdict(c) for c in checks],
        }, indent=2) + "\n")
    return 0 if checks_pass(checks) else 2


def checks_pass(checks: Sequence[Check]) -> bool:
    """Every mean agrees; no run emitted a window the input does not have; Vigil emitted
    every window (Quix may miss the windows it could not close)."""
    return all(c.agree and (c.name.startswith("vigil vs") or not c.only_left)
               and (c.name not in ("vigil", "plain") or not c.only_right) for c in checks)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each engine (they take turns); the median is reported")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=["vigil", "quix"],
                        help="which jobs to run (default: vigil quix)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("-v", "--verbose", action="store_true")
    # internal: run one engine's job in this process (the parent starts these)
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.keys < 1 or args.rounds < 1:
        parser.error("--events, --keys and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        return worker_main(args)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
