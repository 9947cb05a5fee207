"""Simulators: the models behave as documented, and the real drivers read them back
through pseudo-terminals and mock pins."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sensors.base import Reading
from edge.sim.devices import SimulatedPatient, SimulatedVehicle
from edge.sim.patient import PatientModel
from edge.sim.run import Simulation, run_simulation
from edge.sim.vehicle import TOWN_CENTRE_ZONE, VehicleModel, distance_m, load_traffic

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = Path("/work/shared/testdata/vehicles/a10-ring.csv.gz")
if not TRAFFIC.exists():
    TRAFFIC = ROOT.parent / "shared" / "testdata" / "vehicles" / "a10-ring.csv.gz"
START = 1_764_072_000.0  # 2025-11-25T12:00:00Z


@pytest.fixture
def sim_factory() -> Iterator[list[Simulation]]:
    made: list[Simulation] = []
    yield made
    for sim in made:
        sim.close()


def manual_sim(made: list[Simulation], vehicles: int = 1, patients: int = 0, seed: int = 1,
               **kw: object) -> Simulation:
    sim = Simulation(vehicles, patients, seed, start=START, manual=True, **kw)  # type: ignore[arg-type]
    made.append(sim)
    sim.open_sensors()
    return sim


def by(readings: list[tuple[str, str, Reading]], sensor: str) -> list[Reading]:
    return [r for _, s, r in readings if s == sensor]


# ---- vehicle model (pure) ----------------------------------------------------------------


def test_a_fleet_hour_has_speeding_hard_braking_stops_zone_crossings_and_fix_loss() -> None:
    speeding = braking = stops = crossings = fix_losses = 0
    for i in range(8):
        m = VehicleModel.create(i, seed=1)
        prev = m.state()
        still = 0
        for _ in range(3600):
            m.step(1.0)
            s = m.state()
            limit = m.route.legs[m.leg].limit_kmh / 3.6
            speeding += s.speed > 1.2 * limit
            braking += prev.speed - s.speed >= 5.0  # >= 5 m/s lost in one second
            still = still + 1 if s.speed == 0 else 0
            stops += still == 10
            crossings += TOWN_CENTRE_ZONE.contains(prev.lat, prev.lon) != TOWN_CENTRE_ZONE.contains(s.lat, s.lon)
            fix_losses += prev.gps_fix and not s.gps_fix
            prev = s
    assert speeding > 100 and braking > 10 and stops > 20 and crossings > 10 and fix_losses > 5


def test_a_delivery_stop_turns_the_ignition_off_and_opens_the_door() -> None:
    m = VehicleModel.create(0, seed=1)
    seen = set()
    for _ in range(1800):
        m.step(1.0)
        s = m.state()
        seen.add((s.speed == 0, s.ignition, s.door_open))
    assert (True, False, True) in seen and (False, True, False) in seen
    assert (False, False, True) not in seen  # never moving with the door open


def test_the_same_seed_drives_the_same_way() -> None:
    def drive(seed: int) -> list[tuple[float, float, float]]:
        m = VehicleModel.create(2, seed)
        out = []
        for _ in range(300):
            m.step(1.0)
            s = m.state()
            out.append((s.lat, s.lon, s.speed))
        return out

    assert drive(5) == drive(5) != drive(6)


# ---- patient model (pure) ----------------------------------------------------------------


def test_a_deteriorating_patient_shows_what_news2_scores() -> None:
    m = PatientModel.create(0, seed=1, profile="deteriorating")
    m.step(m.onset + m.duration + 300)
    v = m.observe()
    assert v.resp_rate is not None and v.resp_rate >= 25
    assert v.heart_rate is None or v.heart_rate >= 111
    assert v.sys_bp is not None and v.sys_bp <= 100
    assert v.temp_c is not None and v.temp_c >= 38.5
    assert v.consciousness == "C" and v.on_oxygen is True
    assert any(what == "put on oxygen" for _, what in m.log)


def test_a_stable_patient_stays_in_the_normal_ranges() -> None:
    m = PatientModel.create(0, seed=1, profile="stable")
    rr, spo2 = [], []
    for _ in range(1800):
        m.step(2.0)
        v = m.observe()
        rr.append(v.resp_rate)
        if v.spo2 is not None:
            spo2.append(v.spo2)
    assert sum(12 <= x <= 20 for x in rr if x is not None) / len(rr) > 0.95
    assert min(spo2) >= 92 and not m.on_oxygen


def test_probes_fall_off_now_and_then() -> None:
    m = PatientModel.create(3, seed=2)
    off = 0
    for _ in range(3600):
        m.step(2.0)
        off += m.observe().probe_off
    assert 0 < off < 3600 // 4


# ---- the drivers reading the simulated hardware ---------------------------------------------


def test_simulated_gps_is_read_back_by_the_gps_driver(sim_factory: list[Simulation]) -> None:
    sim = manual_sim(sim_factory, vehicles=1)
    vehicle = sim.devices[0]
    assert isinstance(vehicle, SimulatedVehicle)
    truth = {}
    readings = []
    for second in range(1, 41):
        if second == 20:
            vehicle.model.fix_lost.until = vehicle.model.t + 5.5  # type: ignore[attr-defined]
        readings += sim.step(1.0)
        truth[int((START + second) * 1000)] = vehicle.state
    fixes = by(readings, "gps")
    assert len(fixes) >= 38  # one a second (the last may still be open)
    for r in fixes:
        s = truth[r.ts]
        if not s.gps_fix:
            assert r.data["mode"] == 1 and r.data["lat"] is None
            continue
        assert r.data["mode"] == 3
        assert distance_m(r.data["lat"], r.data["lon"], s.lat, s.lon) < 0.5
        assert r.data["speed"] == pytest.approx(s.speed, abs=0.01)
    assert sum(r.data["mode"] == 1 for r in fixes) == 5  # seconds 20 to 24
    assert fixes[0].data["time"] == "2025-11-25T12:00:01.000Z"


def test_simulated_elm327_and_gpio_follow_the_vehicle(sim_factory: list[Simulation]) -> None:
    sim = manual_sim(sim_factory, vehicles=1, seed=1)
    vehicle = sim.devices[0]
    assert isinstance(vehicle, SimulatedVehicle)
    readings = []
    checked = 0
    for _ in range(700):  # vehicle 0, seed 1 makes a delivery stop around t = 480 s
        step = sim.step(1.0)
        readings += step
        for r in by(step, "obd"):
            s = vehicle.state
            assert r.data["ignition"] == s.ignition
            if s.ignition:
                assert abs(r.data["speed_kmh"] - s.speed * 3.6) <= 0.5 + 2.0 * 3.6  # within one step's change
                checked += 1
    assert checked > 300
    doors = [r.data["state"] for r in by(readings, "door")]
    ignition = [r.data["state"] for r in by(readings, "ignition")]
    assert doors[:3] == ["closed", "open", "closed"]
    assert ignition[:3] == ["on", "off", "on"]
    assert any(r.data["ignition"] is False and r.data["speed_kmh"] is None for r in by(readings, "obd"))
    assert vehicle.sensors[1].stats()["errors"] == 0


def test_the_panic_button_is_a_press_through_mock_pins(sim_factory: list[Simulation]) -> None:
    sim = manual_sim(sim_factory, vehicles=1)
    vehicle = sim.devices[0]
    assert isinstance(vehicle, SimulatedVehicle)
    sim.step(1.0)
    vehicle.model.panic.until = vehicle.model.t + 2.0  # type: ignore[attr-defined]
    readings = []
    for _ in range(5):
        readings += sim.step(1.0)
    assert [r.data["event"] for r in by(readings, "panic")] == ["press", "release"]


def test_simulated_monitor_is_read_back_by_the_vitals_driver(sim_factory: list[Simulation]) -> None:
    sim = manual_sim(sim_factory, vehicles=0, patients=2, seed=4)
    patient = sim.devices[1]
    assert isinstance(patient, SimulatedPatient) and patient.model.profile == "deteriorating"
    readings = []
    for _ in range(300):
        readings += sim.step(10.0)
    mine = [r for d, s, r in readings if d == "bed-002" and s == "monitor"]
    assert len(mine) >= 1490  # one line every 2 s for 3000 s
    first, last = mine[0].data, mine[-1].data
    assert first["resp_rate"] <= 20 and last["resp_rate"] >= 24
    assert last["on_oxygen"] is True
    assert {r.kind for _, _, r in readings} <= {"vitals", "button"}
    assert sim.devices[0].sensors[0].stats()["bad_lines"] == 0


def test_a_run_is_a_function_of_its_seed(sim_factory: list[Simulation]) -> None:
    def run(seed: int) -> list[tuple[str, str, str, int, str]]:
        sim = manual_sim(sim_factory, vehicles=2, patients=2, seed=seed)
        out = []
        for _ in range(60):
            out += [(d, s, r.kind, r.ts, json.dumps(r.data, sort_keys=True)) for d, s, r in sim.step(1.0)]
        sim.close()
        return sorted(out)

    first = run(11)
    assert first == run(11)
    assert first != run(12)


def test_recorded_motorway_traffic_replays_through_the_gps_driver(sim_factory: list[Simulation]) -> None:
    tracks = load_traffic(TRAFFIC, limit=2)
    sim = manual_sim(sim_factory, vehicles=2, traffic=TRAFFIC)
    readings = []
    for _ in range(30):
        readings += sim.step(1.0)
    fixes = [r for d, s, r in readings if d == "veh-001" and s == "gps"]
    assert len(fixes) >= 29
    for r in fixes[:29]:
        second = (r.ts - int(START * 1000)) // 1000
        lat, lon, speed, _ = tracks[0].rows[second - tracks[0].start]
        assert distance_m(r.data["lat"], r.data["lon"], lat, lon) < 0.5
        assert r.data["speed"] == pytest.approx(speed, abs=0.01)


# ---- running it ---------------------------------------------------------------------------


def test_an_agent_can_poll_the_sensors_while_the_world_runs_in_the_background() -> None:
    sim = Simulation(1, 1, seed=2, speedup=20.0, tick=0.02)
    try:
        sim.open_sensors()
        sim.start()
        kinds: set[str] = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not {"gps", "obd", "vitals", "gpio"} <= kinds:
            for device in sim.devices:  # what an agent's poll loop does
                for sensor in device.sensors:
                    kinds |= {r.kind for r in sensor.poll()}
            time.sleep(0.01)
    finally:
        sim.close()
    assert {"gps", "obd", "vitals", "gpio"} <= kinds


def test_run_simulation_calls_back_with_every_reading() -> None:
    seen: list[tuple[str, str, str]] = []
    run_simulation(2, 1, 3, lambda d, s, r: seen.append((d, s, r.kind)), speedup=50.0, duration=20.0, tick=0.02)
    devices = {d for d, _, _ in seen}
    assert devices == {"veh-001", "veh-002", "bed-001"}
    assert sum(k == "gps" for _, _, k in seen) >= 30


def test_vigil_edge_simulate_prints_json_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "edge", "simulate", "--vehicles", "2", "--patients", "2",
         "--seed", "7", "--speedup", "40", "--duration", "20", "--print"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["kind"] for r in rows} >= {"gps", "obd", "vitals", "gpio"}
    assert {r["device"] for r in rows} == {"veh-001", "veh-002", "bed-001", "bed-002"}
    gps = next(r for r in rows if r["kind"] == "gps")
    assert set(gps) == {"device", "sensor", "kind", "ts", "data"} and gps["data"]["mode"] in (1, 3)


def test_vigil_edge_simulate_replays_recorded_traffic() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "edge", "simulate", "--vehicles", "3", "--patients", "0",
         "--traffic", str(TRAFFIC), "--speedup", "40", "--duration", "10", "--print"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    fixes = [json.loads(line) for line in out.stdout.splitlines() if '"kind":"gps"' in line]
    assert {f["device"] for f in fixes} == {"veh-001", "veh-002", "veh-003"}
    # the A10 near Königs Wusterhausen
    assert all(52.2 < f["data"]["lat"] < 52.4 and 13.5 < f["data"]["lon"] < 13.8 for f in fixes)


def test_a_noisy_line_costs_sentences_not_fixes(sim_factory: list[Simulation]) -> None:
    sim = manual_sim(sim_factory, vehicles=1, patients=1, seed=5, line_noise=0.2)
    readings = []
    for _ in range(120):
        readings += sim.step(1.0)
    vehicle, patient = sim.devices
    assert isinstance(vehicle, SimulatedVehicle) and isinstance(patient, SimulatedPatient)
    gps_stats = vehicle.sensors[0].stats()
    assert vehicle.noise.corrupted > 50
    assert gps_stats["bad_sentences"] >= 0.9 * vehicle.noise.corrupted
    assert len(by(readings, "gps")) >= 115  # an epoch survives a bad sentence or two
    monitor = patient.sensors[0].stats()
    assert monitor["bad_lines"] >= 0.9 * patient.noise.corrupted > 0
    assert len(by(readings, "monitor")) == monitor["lines"] >= 40
