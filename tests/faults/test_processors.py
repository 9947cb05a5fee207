"""`vigil processors` crashed and rebalanced mid-stream computes what an undisturbed run does.

The input: the recorded motorway traffic in ../shared/testdata/vehicles (300 vehicles,
15 minutes, as GPS events) and a ward of simulated patients, in a 4-partition
``telemetry`` topic of a real broker. The processors run as real `vigil processors`
processes; the outputs are read back from ``alerts`` and ``device-state``.

What is compared: every output computed from event time alone, that is alerts up to the
newest event time in the input and device-state windows the input's own watermark
closed. (After the end of the input the clock follows the wall clock, which differs
from run to run by design: a device silent from then on goes offline on real time.)
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import ROOT, BrokerProcess, stop_process

TRAFFIC = ROOT.parent / "shared" / "testdata" / "vehicles" / "a10-ring.csv.gz"
T0 = 1_760_000_000_000
PARTITIONS = 4
WINDOW_MS, OUT_OF_ORDER_MS = 5000, 1000

CONFIG = """
[kafka.client]
"heartbeat.interval.ms" = 500

[windows]
state_window_s = 5
max_out_of_order_s = 1
idle_timeout_s = 2

[checkpoint]
interval_s = 0.3

[vehicles]
default_speed_limit = 27.8
overspeed_duration_s = 3
offline_s = 120
harsh_quiet_s = 30
min_trip_duration_s = 60
min_parking_s = 30
[[vehicles.zones]]
name = "ramp"
lat = {lat}
lon = {lon}
radius_m = 400

[patients]
no_data_s = 45
"""


def traffic_events() -> tuple[list[tuple[str, dict[str, Any]]], tuple[float, float]]:
    with gzip.open(TRAFFIC, "rt") as f:
        rows = list(csv.DictReader(f))
    seqs: Counter[str] = Counter()
    events = []
    for row in rows:
        device = f"car-{row['vehicle']}"
        seqs[device] += 1
        ts = T0 + int(float(row["t"]) * 1000)
        events.append((device, {"device": device, "seq": seqs[device], "ts": ts, "kind": "gps",
                                "data": {"mode": 3, "lat": float(row["lat"]), "lon": float(row["lon"]),
                                         "speed": float(row["speed"]), "track": float(row["heading"])}}))
    middle = rows[len(rows) // 2]
    return events, (float(middle["lat"]), float(middle["lon"]))


def ward_events(patients: int = 8, seconds: int = 900) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(3)
    events = []
    for p in range(patients):
        device = f"bed-{p}"
        gone = range(400, 470) if p == 2 else range(0)  # bed-2's monitor unplugged for 70 s
        for i in range(0, seconds, 2):
            if i in gone:
                continue
            worse = p % 3 == 0 and i > 300
            data = {"heart_rate": rng.gauss(136 if worse else 75, 3), "spo2": rng.gauss(89 if worse else 97, 1),
                    "resp_rate": rng.gauss(24 if worse else 15, 1.5), "temp_c": 37.0, "sys_bp": 118,
                    "dia_bp": 78, "on_oxygen": False, "consciousness": "A",
                    "probe_off": p == 1 and 200 <= i < 240}
            events.append((device, {"device": device, "seq": i // 2 + 1, "ts": T0 + i * 1000,
                                    "kind": "vitals", "data": data}))
    return events


@pytest.fixture(scope="module")
def dataset() -> tuple[list[tuple[str, bytes]], tuple[float, float], int]:
    vehicles, zone = traffic_events()
    events = sorted(vehicles + ward_events(), key=lambda e: e[1]["ts"])
    max_ts = max(e["ts"] for _, e in events)
    return [(d, json.dumps(e).encode()) for d, e in events], zone, max_ts


def fill(bootstrap: str, records: list[tuple[str, bytes]]) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("telemetry", PARTITIONS, 1)]).values():
        f.result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for key, value in records:
        while True:
            try:
                producer.produce("telemetry", value, key.encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(30) == 0
    return end_offsets(bootstrap, "telemetry")


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def committed(bootstrap: str, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition("telemetry", p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    ends = end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    out: list[bytes] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            positions[msg.partition()] = msg.offset() + 1
            out.append(msg.value())
    finally:
        c.close()
    return out


class Processors:
    def __init__(self, tmp: Path, bootstrap: str, group: str, config: str) -> None:
        self.tmp, self.bootstrap, self.group = tmp, bootstrap, group
        self.config = tmp / "processors.toml"
        self.config.write_text(config)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "-v", "processors", "--config", str(self.config),
             "--bootstrap", self.bootstrap, "--group", self.group, "--client-id", name,
             "--instance-id", name], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_done(self, ends: dict[int, int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} exited:\n{self.log(name)[-3000:]}"
            if committed(self.bootstrap, self.group) == ends:
                return
            time.sleep(0.3)
        raise AssertionError("processors did not get through the input:\n"
                             + "\n".join(self.log(n)[-2000:] for n in self.procs))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_process(proc, 20)


def outputs(bootstrap: str, max_ts: int) -> tuple[list[dict[str, Any]], set[bytes], set[bytes]]:
    """(alerts in log order with their repeats, distinct alerts, distinct closed states),
    all computed from event time alone."""
    alerts = [json.loads(v) for v in read_all(bootstrap, "alerts")]
    alerts = [a for a in alerts if a["ts"] <= max_ts]
    states = {v for v in read_all(bootstrap, "device-state")
              if json.loads(v)["window"]["end"] <= max_ts - OUT_OF_ORDER_MS}
    distinct = {json.dumps(a, sort_keys=True).encode() for a in alerts}
    return alerts, distinct, states


def resumed_midway(log: str, ends: dict[int, int]) -> bool:
    """Did this process take over a partition from a checkpoint before its end?"""
    return any(int(offset) < ends[int(p)] for p, offset in
               re.findall(r"partition (\d+): restored \d+ devices, resuming at offset (\d+)", log))


def per_fingerprint(alerts: list[dict[str, Any]]) -> dict[str, list[tuple[int, int, str]]]:
    """Each fingerprint's transitions in order, repeats (a replay's copies) removed."""
    seen: dict[str, list[tuple[int, int, str]]] = {}
    for a in alerts:
        step = (a["started"], a["revision"], a["state"])
        steps = seen.setdefault(a["fingerprint"], [])
        if step not in steps:
            steps.append(step)
    return seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, dataset: Any) -> dict[str, Any]:
    """An undisturbed run: one processor through the whole input."""
    records, zone, max_ts = dataset
    tmp = tmp_path_factory.mktemp("reference")
    broker = BrokerProcess(tmp / "broker").start()
    try:
        ends = fill(broker.bootstrap, records)
        run = Processors(tmp, broker.bootstrap, "ref", CONFIG.format(lat=zone[0], lon=zone[1]))
        run.start("only")
        run.wait_done(ends)
        run.stop_all()
        alerts, distinct, states = outputs(broker.bootstrap, max_ts)
    finally:
        broker.stop()
    return {"alerts": alerts, "distinct": distinct, "states": states}


def test_the_reference_run_raises_every_kind_of_alert(reference: dict[str, Any]) -> None:
    rules = Counter(a["rule"] for a in reference["alerts"] if a["state"] == "fired")
    for rule in ("overspeed", "geofence:ramp", "harsh_braking", "offline", "trip",
                 "news2", "threshold:spo2_low", "threshold:heart_rate_high", "probe_off", "no_data"):
        assert rules[rule] > 0, (rule, rules)
    # undisturbed, nothing is written twice
    assert len(reference["alerts"]) == len(reference["distinct"])
    assert len(reference["states"]) > 10_000


def test_sigkill_at_random_moments_changes_no_result(tmp_path: Path, broker: BrokerProcess,
                                                     dataset: Any, reference: dict[str, Any]) -> None:
    records, zone, max_ts = dataset
    ends = fill(broker.bootstrap, records)
    run = Processors(tmp_path, broker.bootstrap, "crashy", CONFIG.format(lat=zone[0], lon=zone[1]))
    rng = random.Random()
    total = sum(ends.values())
    # Kill it as it passes random points of the input (seen through its commits, which
    # follow each checkpoint), a random moment after each, however fast it runs.
    marks = sorted(rng.uniform(0.05, 0.9) for _ in range(4))
    kills = 0
    proc = run.start("p1")
    deadline = time.monotonic() + 120
    for mark in marks:
        while sum(o for o in committed(broker.bootstrap, "crashy").values() if o > 0) < mark * total:
            assert time.monotonic() < deadline and proc.poll() is None, run.log("p1")[-3000:]
            time.sleep(0.02)
        if committed(broker.bootstrap, "crashy") == ends:
            break  # it finished meanwhile
        time.sleep(rng.uniform(0, 0.3))
        proc.kill()
        proc.wait(10)
        kills += 1
        proc = run.start("p1")
    run.wait_done(ends)
    run.stop_all()
    assert kills >= 2, "the processor finished too soon to be killed twice; feed it more"
    alerts, distinct, states = outputs(broker.bootstrap, max_ts)
    assert distinct == reference["distinct"]
    assert per_fingerprint(alerts) == per_fingerprint(reference["alerts"])
    assert states == reference["states"]
    assert resumed_midway(run.log("p1"), ends), run.log("p1")


def test_a_second_processor_joining_midway_changes_no_result(tmp_path: Path, broker: BrokerProcess,
                                                             dataset: Any, reference: dict[str, Any]) -> None:
    records, zone, max_ts = dataset
    ends = fill(broker.bootstrap, records)
    run = Processors(tmp_path, broker.bootstrap, "pair", CONFIG.format(lat=zone[0], lon=zone[1]))
    p1 = run.start("p1")
    deadline = time.monotonic() + 60
    while not any(o > 0 for o in committed(broker.bootstrap, "pair").values()):
        assert time.monotonic() < deadline, run.log("p1")
        time.sleep(0.05)
    # Hold the first one still while the second joins, so that it is surely mid-stream
    # when the group rebalances (well within its session timeout: it stays a member).
    os.kill(p1.pid, signal.SIGSTOP)
    try:
        run.start("p2")
        while "joined group" not in run.log("p2"):
            assert time.monotonic() < deadline, run.log("p2")
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        os.kill(p1.pid, signal.SIGCONT)
    run.wait_done(ends)
    run.stop_all()
    alerts, distinct, states = outputs(broker.bootstrap, max_ts)
    assert distinct == reference["distinct"]
    assert per_fingerprint(alerts) == per_fingerprint(reference["alerts"])
    assert states == reference["states"]
    # both worked: the second got partitions and restored them from the first's checkpoints
    assert resumed_midway(run.log("p2"), ends), run.log("p2")
