"""The one-box demo's scripted incidents, end to end, and `vigil up` surviving crashed children.

`vigil up` runs headless with two vehicles and two patients, simulated time running
five times faster than the wall clock; everything about alerts and devices is seen
through the HTTP API alone, with the read token `vigil up` keeps in
var/gateway/demo.token. The crash test also reads the telemetry topic, to count every
device's events.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from edge.sampling import DEFAULTS, Sampler
from edge.sensors.base import Reading
from edge.sensors.vitals import Vitals
from edge.sim import Simulation
from edge.sim.incidents import PERIOD_S, SCHEDULE, incidents_for
from edge.sim.patient import PatientModel
from edge.sim.vehicle import TOWN_CENTRE_ZONE, VehicleModel, road_limit
from tests.conftest import ROOT, free_port, wait_for_port

SPEEDUP = 5  # simulated seconds per second: the whole schedule's first round in ~20 s
DEVICES = ("veh-001", "veh-002", "bed-001", "bed-002")
SCRIPTED_ALERTS = (  # (rule, device): what each scripted incident raises
    ("overspeed", "veh-001"),
    ("geofence:town-centre", "veh-002"),
    ("news2", "bed-001"),
    ("threshold:spo2_low", "bed-001"),
    ("probe_off", "bed-002"),
)


class VigilUp:
    """`vigil up` as a user runs it, on free loopback ports, its output in a file."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.var = tmp_path / "var"
        self.out_path = tmp_path / "up.out"
        self.broker_port, self.mqtt_port, self.api_port = free_port(), free_port(), free_port()
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--var", str(self.var), "--broker-port", str(self.broker_port),
             "--mqtt-port", str(self.mqtt_port), "--api-port", str(self.api_port), "--vehicles", "2",
             "--patients", "2", "--speedup", str(SPEEDUP), *extra],
            cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def api(self) -> httpx.Client:
        """A client of the HTTP API with the box's own token, once the API listens."""
        wait_for_port(self.api_port, timeout=60, proc=self.proc)
        token = (self.var / "gateway" / "demo.token").read_text().strip()
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def child_pid(self, subcommand: str) -> int:
        """The PID of the child of this `vigil up` running ``vigil <subcommand>`` with a path
        under this test's var."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            words = [a.decode(errors="replace") for a in argv if a]
            line = " ".join(words).replace("deploy.cli -v ", "deploy.cli ")
            if (ppid == self.proc.pid and line.find(f"deploy.cli {subcommand} ") >= 0
                    and any(str(self.var) in w for w in words)):
                return int(entry.name)
        raise AssertionError(f"no `{subcommand}` child of vigil up (pid {self.proc.pid}):\n{self.output}")

    def wait_for_output(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            assert time.monotonic() < deadline, f"no {pattern!r} in vigil up's output:\n{self.output}"
            assert self.proc.poll() is None, f"vigil up exited with {self.proc.returncode}:\n{self.output}"
            time.sleep(0.2)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


@contextmanager
def vigil_up(tmp_path: Path, *extra: str) -> Iterator[VigilUp]:
    up = VigilUp(tmp_path, *extra)
    try:
        yield up
    finally:
        up.stop()


def get(api: httpx.Client, path: str, **params: Any) -> Any:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- the schedule, in simulated time -----------------------------------------------------


def test_the_schedule_shows_each_incident_in_the_first_two_minutes_and_again_each_round() -> None:
    """Models only, stepped second by second: what the rules will be fed."""
    speeding, courier = (VehicleModel.create(i, 1, incidents_for(d)) for i, d in enumerate(DEVICES[:2]))
    sick, loose = (PatientModel.create(i, 1, incidents=incidents_for(d)) for i, d in enumerate(DEVICES[2:]))
    over: list[int] = []
    inside: list[int] = []
    spo2: dict[int, int | None] = {}
    probe_off: list[int] = []
    for t in range(1, int(2 * PERIOD_S) + 1):
        for model in (speeding, courier, sick, loose):
            model.step(1.0)
        s = speeding.state()
        if s.speed > road_limit(s.lat, s.lon):
            over.append(t)
        c = courier.state()
        if TOWN_CENTRE_ZONE.contains(c.lat, c.lon):
            inside.append(t)
        spo2[t] = sick.observe().spo2
        if loose.observe().probe_off:
            probe_off.append(t)
    for start in (0, int(PERIOD_S)):  # the first round, and the next
        def during(ts: list[int], a: int, b: int) -> list[int]:
            return [t for t in ts if start + a <= t < start + b]  # noqa: B023 - used at once

        assert len(during(over, 15, 60)) >= 30 and not during(over, 70, 100), over
        assert during(inside, 0, 15) and not during(inside, 60, 300), inside
        assert min(v for t, v in spo2.items() if start + 40 <= t < start + 70 and v is not None) < 88
        assert all(v is not None and v >= 93 for t, v in spo2.items() if start + 100 <= t < start + 120)
        assert during(probe_off, 0, 100) == list(range(start + 20, start + 50)), probe_off


@pytest.mark.parametrize("speedup", [1, SPEEDUP])
def test_an_agent_reporting_changes_passes_the_patients_incidents_on(speedup: int) -> None:
    """The agent reports vitals when they move past a deadband (edge.sampling, wall-clock
    periods), and the rules judge a condition by the readings they get: a low SpO2 needs
    low readings 15 s apart, a probe off readings 10 s apart. The scripted pictures keep
    moving, whatever the noise (seeds)."""
    for seed in range(1, 11):
        sick, loose = (PatientModel.create(i, seed, incidents=incidents_for(d)) for i, d in enumerate(DEVICES[2:]))
        reported: dict[int, list[tuple[float, Vitals]]] = {id(sick): [], id(loose): []}
        samplers = {id(sick): Sampler(DEFAULTS["vitals"]), id(loose): Sampler(DEFAULTS["vitals"])}
        for tick in range(1, 100 * 5 + 1):  # the monitor's lines every 2 s, the agent polling 5 times as often
            t = tick * 0.4
            for model in (sick, loose):
                model.step(0.4)
                sampler = samplers[id(model)]
                offered = [Reading("vitals", model.observe().to_json(), int(t * 1000))] if tick % 5 == 0 else []
                for r in [x for o in offered for x in sampler.offer(o, t / speedup)] + sampler.flush(t / speedup):
                    reported[id(model)].append((r.ts / 1000, Vitals(**r.data)))
        low = longest_run(reported[id(sick)], lambda v: v.spo2 is not None and v.spo2 < 90)
        assert low >= 20, (seed, reported[id(sick)])
        off = longest_run(reported[id(loose)], lambda v: v.probe_off)
        assert off >= 12, (seed, reported[id(loose)])


def longest_run(readings: list[tuple[float, Vitals]], holds: Any) -> float:
    """The longest time between two readings with nothing but readings that hold between."""
    best, since = 0.0, None
    for t, v in readings:
        if holds(v):
            since = t if since is None else since
            best = max(best, t - since)
        else:
            since = None
    return best


def test_devices_the_schedule_names_but_the_simulation_lacks_are_skipped() -> None:
    assert {i.device for i in SCHEDULE} == set(DEVICES)
    sim = Simulation(vehicles=1, patients=0, seed=1, start=1_800_000_000, manual=True, incidents=True)
    try:
        sim.step(30.0)
        assert [d.device_id for d in sim.devices] == ["veh-001"]
        assert any(what == "scripted: speeding" for _, what in sim.devices[0].events)
    finally:
        sim.close()


# --- vigil up, end to end ----------------------------------------------------------------


def test_vigil_up_shows_each_scripted_incident_firing_and_resolving_through_the_api(tmp_path: Path) -> None:
    with vigil_up(tmp_path) as up:
        with up.api() as api:
            done: dict[tuple[str, str], dict[str, Any]] = {}
            deadline = time.monotonic() + 75
            while len(done) < len(SCRIPTED_ALERTS) and time.monotonic() < deadline:
                for rule, device in SCRIPTED_ALERTS:
                    if (rule, device) in done:
                        continue
                    items = get(api, "/alerts", rule=rule, device=device)["items"]
                    resolved = [a for a in items if a["state"] == "resolved"]
                    if resolved:
                        done[rule, device] = get(api, f"/alerts/{resolved[0]['id']}")
                time.sleep(0.5)
            everything = get(api, "/alerts", limit=1000)["items"]
        code = up.stop()
    missing = [ra for ra in SCRIPTED_ALERTS if ra not in done]
    assert not missing, f"not fired and resolved: {missing}; alerts: {json.dumps(everything, indent=1)}\n{up.output}"
    for (rule, device), alert in done.items():
        assert alert["fingerprint"] == f"{rule}|{device}"
        log = [(h["kind"], h["started_at"]) for h in alert["history"] if h["source"] == "log"]
        fired = [started for kind, started in log if kind == "fired"]
        assert fired, (rule, device, alert["history"])
        # the same episode fired, then (later) resolved
        assert ("resolved", fired[0]) in log[log.index(("fired", fired[0])):], (rule, device, alert["history"])
    assert code == 0, up.output


def test_children_killed_with_sigkill_are_restarted_and_no_event_is_lost(tmp_path: Path) -> None:
    with vigil_up(tmp_path) as up:
        wait_for_port(up.broker_port, timeout=30, proc=up.proc)
        with up.api() as api, telemetry(up.broker_port) as consumer:
            seqs: dict[str, set[int]] = {}
            wait_until(lambda: online(api) == set(DEVICES) and read(consumer, seqs) and set(seqs) == set(DEVICES),
                       60, "every device online, with telemetry", up)
            before = {d: max(s) for d, s in seqs.items()}
            states = {d["id"]: d["state_at"] for d in get(api, "/devices")["items"]}
            for subcommand in ("gateway bridge", "processors"):
                os.kill(up.child_pid(subcommand), signal.SIGKILL)
            for name in ("bridge", "processors"):
                up.wait_for_output(rf"vigil up: {name} exited with -9; restarting", 10)
                up.wait_for_output(rf"vigil up: {name} restarted", 30)

            def gapless_past_the_restart() -> bool:
                read(consumer, seqs)
                return all(max(seqs[d]) > before[d] + 2 and seqs[d] == set(range(1, max(seqs[d]) + 1))
                           for d in DEVICES)

            # the devices carry on: later events arrive, and every earlier one is there
            wait_until(gapless_past_the_restart, 45, "every device's events gapless past the restarts", up,
                       lambda: {d: sorted(set(range(1, max(s) + 1)) - s)[:20] for d, s in seqs.items()})
            # the processors are back at work: every device's state moves on
            wait_until(lambda: all(d["state_at"] is not None and d["state_at"] > (states[d["id"]] or "")
                                   for d in get(api, "/devices")["items"]), 30,
                       "device state newer than before the processors' restart", up)
            assert online(api) == set(DEVICES)
        code = up.stop()
    assert "Vigil is up" in up.output and code == 0, up.output


# --- helpers --------------------------------------------------------------------------------


def online(api: httpx.Client) -> set[str]:
    return {d["id"] for d in get(api, "/devices", status="online")["items"]}


@contextmanager
def telemetry(broker_port: int) -> Iterator[Consumer]:
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{broker_port}", "group.id": "e2e-incidents",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        parts: list[int] = []
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            md = consumer.list_topics("telemetry", timeout=10)
            parts = list(md.topics["telemetry"].partitions) if "telemetry" in md.topics else []
            if not parts:
                time.sleep(0.3)
        assert parts, "no telemetry topic"
        consumer.assign([TopicPartition("telemetry", p, 0) for p in parts])
        yield consumer
    finally:
        consumer.close()


def read(consumer: Consumer, seqs: dict[str, set[int]]) -> bool:
    """Add what the telemetry topic has now to ``seqs`` (device -> seqs seen); True."""
    while True:
        batch = consumer.consume(1000, 0.3)
        for m in batch:
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                continue
            event = json.loads(m.value())
            assert m.key().decode() == event["device"]
            seqs.setdefault(event["device"], set()).add(int(event["seq"]))
        if len(batch) < 1000:
            return True


def wait_until(condition: Any, timeout: float, what: str, up: VigilUp, details: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {details() if details else ''}\n{up.output}")
        assert up.proc.poll() is None, f"vigil up exited with {up.proc.returncode}:\n{up.output}"
        time.sleep(0.5)
