"""The processors' full rule set: events/s and event-to-alert latency.

Run: `PYTHONPATH=. .venv/bin/python tests/perf/bench_rules.py [--repeat 4] [--rate 2000]`

1. Throughput, pure: `PartitionProcessor` (window engine + every vehicle and patient
   rule + device-state snapshots) over the recorded motorway traffic (300 vehicles,
   15 min, ../shared/testdata/vehicles) and a simulated ward, replayed ``--repeat``
   times as new devices. Baseline in the same process: parsing the same records with
   orjson and nothing else.
2. Throughput through the log: the same records in a 4-partition ``telemetry`` topic of
   a Vigil broker; one `vigil processors` process (consumer group, checkpoints every
   5 s) until it has committed the end of every partition. Baseline in the same run: a
   plain confluent-kafka loop reading and parsing the same records.
3. Latency: `vigil processors` fed at a steady ``--rate`` events/s (live motorway
   traffic); every 100 ms a new vehicle reports its first position inside a geofence.
   The time from producing that event to reading its ``geofence`` alert from
   ``alerts`` (p50/p99), as a client of the log sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from processors.config import ProcessorsConfig  # noqa: E402
from processors.partition import PartitionProcessor  # noqa: E402
from tests.conftest import BrokerProcess, stop_process  # noqa: E402
from tests.faults.test_processors import traffic_events, ward_events  # noqa: E402

PARTITIONS = 4
ZONE = (52.30, 13.60)
RULES = {"vehicles": {"default_speed_limit": 27.8, "zones": [
    {"name": "yard", "lat": ZONE[0], "lon": ZONE[1], "radius_m": 200}]}}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def dataset(repeat: int) -> list[tuple[bytes, bytes]]:
    vehicles, _ = traffic_events()
    base = sorted(vehicles + ward_events(patients=20), key=lambda e: e[1]["ts"])
    span = base[-1][1]["ts"] - base[0][1]["ts"] + 1000
    out = []
    for r in range(repeat):  # each repeat: the same traffic later, as other devices
        for device, e in base:
            name = f"{device}~{r}"
            out.append((name.encode(), orjson.dumps({**e, "device": name, "ts": e["ts"] + r * span})))
    return out


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def pure(records: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    config = ProcessorsConfig.from_mapping(RULES)
    t = time.perf_counter()
    for _key, value in records:
        orjson.loads(value)
    parse = len(records) / (time.perf_counter() - t)
    procs = [PartitionProcessor(p, config) for p in range(PARTITIONS)]
    t = time.perf_counter()
    for i, (key, value) in enumerate(records):
        procs[hash(key) % PARTITIONS].process(i, value, 0)
    return parse, len(records) / (time.perf_counter() - t)


def fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    probe.close()
    return ends


def plain_loop(bootstrap: str, topic: str, ends: dict[int, int]) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "plain", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    left, n = sum(ends.values()), 0
    t = time.perf_counter()
    while n < left:
        for msg in c.consume(2000, 1.0):
            if msg.error() is None:
                orjson.loads(msg.value())
                n += 1
    rate = n / (time.perf_counter() - t)
    c.close()
    return rate


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: tp.offset for tp in
                c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
    finally:
        c.close()


def start_processors(tmp: Path, bootstrap: str, group: str, prefix: str = "") -> subprocess.Popen[bytes]:
    """`vigil processors` on ``<prefix>telemetry`` writing ``<prefix>alerts`` and so on."""
    config = tmp / f"{group}.toml"
    lines = ["[topics]", f'telemetry = "{prefix}telemetry"', f'alerts = "{prefix}alerts"',
             f'device_state = "{prefix}device-state"', f'checkpoints = "{prefix}checkpoints"',
             f'late = "{prefix}late"', "[vehicles]", "default_speed_limit = 27.8", "[[vehicles.zones]]", 'name = "yard"',
             f"lat = {ZONE[0]}", f"lon = {ZONE[1]}", "radius_m = 200"]
    config.write_text("\n".join(lines) + "\n")
    log = open(tmp / f"{group}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "processors", "--config", str(config),
                             "--bootstrap", bootstrap, "--group", group], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    return proc


def through_log(tmp: Path, bootstrap: str, ends: dict[int, int]) -> tuple[float, float]:
    proc = start_processors(tmp, bootstrap, "bench")
    t = time.perf_counter()
    started = None
    while True:
        now = committed(bootstrap, "bench", "telemetry")
        if started is None and any(o > 0 for o in now.values()):
            started = time.perf_counter()  # the group is joined and records flow
        if now == ends:
            break
        if proc.poll() is not None:
            raise SystemExit(f"processors exited: {(tmp / 'bench.log').read_text()[-2000:]}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t
    cpu = _child_cpu(proc.pid)
    stop_process(proc, 20)
    return sum(ends.values()) / elapsed, cpu


def _child_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(tmp: Path, bootstrap: str, rate: int, seconds: float) -> tuple[list[float], list[float]]:
    """(ms from producing each probe event to reading it back from the input topic, the
    log's own latency; ms from producing it to reading its alert)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("live.telemetry", PARTITIONS, 1)]).values():
        f.result(10)
    proc = start_processors(tmp, bootstrap, "live", prefix="live.")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    sent: dict[str, float] = {}
    echoed: dict[str, float] = {}
    alerted: dict[str, float] = {}
    stop = threading.Event()

    def read(topic: str, group: str, seen: dict[str, float], wanted: Any) -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "auto.offset.reset": "latest"})
        consumer.subscribe([topic])
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            subject = wanted(msg)
            if subject is not None:
                seen.setdefault(subject, time.perf_counter())
        consumer.close()

    def probe_key(msg: Any) -> str | None:
        key = (msg.key() or b"").decode()
        return key if key.startswith("probe-") else None

    def probe_alert(msg: Any) -> str | None:
        doc = json.loads(msg.value())
        fired = doc["rule"] == "geofence:yard" and doc["state"] == "fired"
        return doc["subject"] if fired else None

    readers = [threading.Thread(target=read, args=("live.telemetry", "echo", echoed, probe_key)),
               threading.Thread(target=read, args=("live.alerts", "latency", alerted, probe_alert))]
    for t in readers:
        t.start()
    vehicles, _ = traffic_events()
    i, probe = 0, 0
    warmup_until = time.perf_counter() + 8  # joining the group, creating the outputs
    t_end = warmup_until + seconds
    next_probe = warmup_until
    start = time.perf_counter()
    while time.perf_counter() < t_end:
        now = time.perf_counter()
        due = int((now - start) * rate)
        while i < due:
            device, e = vehicles[i % len(vehicles)]
            producer.produce("live.telemetry", orjson.dumps({**e, "ts": int(time.time() * 1000),
                                                             "seq": i + 1, "device": f"{device}~live"}),
                             f"{device}~live".encode())
            i += 1
        if now >= next_probe:
            probe += 1
            name = f"probe-{probe}"
            value = orjson.dumps({"device": name, "seq": 1, "ts": int(time.time() * 1000), "kind": "gps",
                                  "data": {"mode": 3, "lat": ZONE[0], "lon": ZONE[1], "speed": 3.0}})
            sent[name] = time.perf_counter()
            producer.produce("live.telemetry", value, name.encode())
            next_probe += 0.1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(10)
    time.sleep(3)
    stop.set()
    for t in readers:
        t.join()
    stop_process(proc, 20)
    return ([(echoed[d] - sent[d]) * 1000 for d in sent if d in echoed],
            [(alerted[d] - sent[d]) * 1000 for d in sent if d in alerted])


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.1f} ms, p99 {p99:.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=4, help="replays of the traffic (each ~75k events)")
    ap.add_argument("--rate", type=int, default=2000, help="steady input rate for the latency run")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds of the latency run")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    records = dataset(args.repeat)
    print(f"{len(records):,} events ({args.repeat} replays of the motorway traffic and a 20-bed ward)")
    parse, rules = pure(records)
    print(f"pure, one process: orjson parse only {parse:,.0f} ev/s; full rule set {rules:,.0f} ev/s "
          f"(ratio {rules / parse:.2f})")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = BrokerProcess(tmp / "broker").start()
        try:
            ends = fill(broker.bootstrap, "telemetry", records)
            plain = plain_loop(broker.bootstrap, "telemetry", ends)
            full, cpu = through_log(tmp, broker.bootstrap, ends)
            print(f"through the log: plain consume+parse loop {plain:,.0f} ev/s; vigil processors "
                  f"{full:,.0f} ev/s (ratio {full / plain:.2f}; includes joining the group; "
                  f"{cpu / len(records) * 1e6:.1f} CPU-us/event)")
            echo, lat = latency(tmp, broker.bootstrap, args.rate, args.seconds)
            if not lat or not echo:
                print("event-to-alert latency: no alert arrived", file=sys.stderr)
                return 1
            print(f"latency at {args.rate} ev/s: the log alone (produce -> consume) {percentiles(echo)}; "
                  f"event -> alert (two trips through the log) {percentiles(lat)} "
                  f"({len(lat)} of {len(echo)} probes)")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

