"""One partition's processing, without Kafka: records in, alert/state/late records out."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from processors.config import ConfigError, ProcessorsConfig
from processors.partition import OutRecord, PartitionProcessor

T0 = 1_760_000_000_000

CONFIG = ProcessorsConfig.from_mapping({
    "windows": {"state_window_s": 5, "max_out_of_order_s": 1, "idle_timeout_s": 2},
    "vehicles": {"default_speed_limit": 30, "overspeed_duration_s": 3, "overspeed_clear_s": 2,
                 "offline_s": 30,
                 "zones": [{"name": "depot", "lat": 52.0, "lon": 13.0, "radius_m": 200}]},
    "patients": {"no_data_s": 20},
})


def event(device: str, seq: int, ts: int, kind: str, **data: Any) -> bytes:
    return json.dumps({"device": device, "seq": seq, "ts": ts, "kind": kind, "data": data}).encode()


def gps(device: str, seq: int, ts: int, speed: float, lat: float = 52.1, lon: float = 13.1) -> bytes:
    return event(device, seq, ts, "gps", mode=3, lat=lat, lon=lon, speed=speed, track=0.0)


def vitals(device: str, seq: int, ts: int, **values: Any) -> bytes:
    base = {"heart_rate": 72, "spo2": 97, "resp_rate": 14, "temp_c": 36.8, "sys_bp": 120,
            "dia_bp": 80, "on_oxygen": False, "consciousness": "A", "probe_off": False}
    return event(device, seq, ts, "vitals", **{**base, **values})


def run(proc: PartitionProcessor, records: list[bytes], start_offset: int = 0,
        wall: int = 0) -> list[OutRecord]:
    out: list[OutRecord] = []
    for i, value in enumerate(records):
        out += proc.process(start_offset + i, value, wall)
    return out


def alerts(out: list[OutRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in out if r.output == "alerts"]


def states(out: list[OutRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in out if r.output == "device_state"]


def speeding_run(n: int = 40) -> list[bytes]:
    """truck-1 at 35 m/s (limit 30) for 10 s then 20 m/s; truck-2 drives into the depot."""
    records = []
    for i in range(n):
        ts = T0 + i * 1000
        records.append(gps("truck-1", i + 1, ts, 35.0 if i < 10 else 20.0))
        records.append(gps("truck-2", i + 1, ts, 10.0, lat=52.0 if i >= 20 else 52.1, lon=13.0))
    return records


def test_alerts_are_keyed_by_fingerprint_and_say_the_device_kind() -> None:
    proc = PartitionProcessor(0, CONFIG)
    out = run(proc, speeding_run())
    got = [(a["fingerprint"], a["state"], a["device_kind"]) for a in alerts(out)]
    assert ("overspeed|truck-1", "fired", "vehicle") in got
    assert ("overspeed|truck-1", "resolved", "vehicle") in got
    assert ("geofence:depot|truck-2", "fired", "vehicle") in got
    for r in out:
        if r.output == "alerts":
            doc = json.loads(r.value)
            assert r.key == doc["fingerprint"].encode() and r.ts == doc["ts"]
    assert proc.offset == 80


def test_device_state_each_closed_window_with_aggregates_and_active_alerts() -> None:
    proc = PartitionProcessor(0, CONFIG)
    out = run(proc, speeding_run())
    truck1 = [s for s in states(out) if s["device"] == "truck-1"]
    # 40 s of data in 5 s windows; the watermark (newest - 1 s) closed the first 7
    assert [s["window"]["start"] - T0 for s in truck1] == [0, 5000, 10000, 15000, 20000, 25000, 30000]
    first = truck1[0]
    assert first["kind"] == "vehicle" and first["news2"] is None
    assert first["window"]["count"] == 5 and first["window"]["mean_speed"] == 35.0
    assert first["window"]["distance_m"] == 0.0  # same position throughout
    assert first["latest"]["speed"] is not None
    assert "overspeed|truck-1" in truck1[1]["alerts"]  # fired at 3 s, still active at 10 s
    truck2 = [s for s in states(out) if s["device"] == "truck-2"]
    assert truck2[4]["window"]["distance_m"] > 10_000  # the jump to the depot


def test_patient_state_carries_vitals_and_news2() -> None:
    proc = PartitionProcessor(0, CONFIG)
    records = [vitals("bed-1", i + 1, T0 + i * 1000, resp_rate=26 if i >= 5 else 14) for i in range(20)]
    out = run(proc, records)
    fired = [a for a in alerts(out) if a["rule"] == "news2"]
    assert fired and fired[0]["state"] == "fired" and fired[0]["device_kind"] == "patient"
    last = states(out)[-1]
    assert last["kind"] == "patient" and last["latest"]["resp_rate"] == 26
    assert last["news2"]["scores"]["resp_rate"] == 3


def test_duplicates_change_nothing_and_garbage_is_skipped() -> None:
    records = speeding_run()
    clean = run(PartitionProcessor(0, CONFIG), records)
    noisy_input = []
    for r in records:
        noisy_input.append(r)
        noisy_input.append(r)  # the gateway resent it after a reconnect
    noisy_input.insert(7, b"not json")
    noisy_input.insert(9, b'{"device": "x"}')
    proc = PartitionProcessor(0, CONFIG)
    noisy = run(proc, noisy_input)
    assert [r.value for r in noisy] == [r.value for r in clean]
    assert proc.duplicates == len(records) and proc.invalid == 2


def test_late_events_go_to_the_side_output_and_still_reach_the_rules() -> None:
    proc = PartitionProcessor(0, CONFIG)
    out = run(proc, [gps("truck-1", i + 1, T0 + i * 1000, 10.0) for i in range(20)])
    out = proc.process(100, gps("truck-9", 1, T0 + 1000, 10.0), 0)  # its window closed long ago
    late = [json.loads(r.value) for r in out if r.output == "late"]
    assert len(late) == 1 and late[0]["device"] == "truck-9" and late[0]["seq"] == 1
    assert proc.late == 1


def test_catching_up_ignores_the_wall_clock_then_a_silent_device_goes_offline() -> None:
    proc = PartitionProcessor(0, CONFIG)
    records = [gps("truck-1", i + 1, T0 + i * 1000, 10.0) for i in range(10)]
    # catching up an hour later: the wall clock is far ahead, nothing fires
    out = run(proc, records, wall=T0 + 3_600_000)
    assert proc.tick(T0 + 3_600_000) == [] and not [a for a in alerts(out) if a["rule"] == "offline"]
    proc.caught_up(T0 + 3_600_000)  # the end of the partition: now wall time counts
    assert not [a for a in alerts(proc.tick(T0 + 3_600_000 + 20_000)) if a["rule"] == "offline"]
    quiet = proc.tick(T0 + 3_600_000 + 31_000)
    offline = [a for a in alerts(quiet) if a["rule"] == "offline"]
    assert offline and offline[0]["state"] == "fired" and offline[0]["subject"] == "truck-1"
    # the clock never goes back: an event arriving now does not rewind it
    again = proc.process(10, gps("truck-1", 11, T0 + 10_000, 10.0), T0 + 3_600_000 + 32_000)
    assert [a["state"] for a in alerts(again) if a["rule"] == "offline"] == ["resolved"]


def test_idle_partition_closes_its_last_windows_on_the_wall_clock() -> None:
    proc = PartitionProcessor(0, CONFIG)
    run(proc, [gps("truck-1", i + 1, T0 + i * 1000, 10.0) for i in range(7)], wall=5)
    proc.caught_up(5)
    out: list[OutRecord] = []
    for step in range(1, 12):
        out += proc.tick(5 + step * 1000)
    assert [s["window"]["start"] - T0 for s in states(out)] == [5000]


def test_snapshot_restore_midway_gives_the_same_output() -> None:
    rng = random.Random(7)
    records = speeding_run(60)
    records += [vitals("bed-1", i + 1, T0 + i * 1000, spo2=rng.choice([97, 88, 85]),
                       probe_off=rng.random() < 0.1) for i in range(60)]
    whole = run(PartitionProcessor(0, CONFIG), records)
    for cut in (1, 37, 90, len(records) - 1):
        first = PartitionProcessor(0, CONFIG)
        head = run(first, records[:cut])
        snap = first.snapshot()
        second = PartitionProcessor.restore(CONFIG, snap)
        assert second.offset == cut
        tail = run(second, records[cut:], start_offset=cut)
        assert [r.value for r in head + tail] == [r.value for r in whole], cut


def test_a_malformed_checkpoint_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        PartitionProcessor.restore(CONFIG, b'{"format": 1}')
    with pytest.raises(ValueError, match="format"):
        PartitionProcessor.restore(CONFIG, b'{"format": 99}')


def test_config_mistakes_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"windows\.state_window"):
        ProcessorsConfig.from_mapping({"windows": {"state_window": 5}})
    with pytest.raises(ConfigError, match=r"vehicles\.devices\.truck-7"):
        ProcessorsConfig.from_mapping({"vehicles": {"devices": {"truck-7": {"speed_limt": 20}}}})
    config = ProcessorsConfig.from_mapping(
        {"vehicles": {"default_speed_limit": 30, "devices": {"truck-7": {"speed_limit": 20}}},
         "patients": {"devices": {"bed-3": {"spo2_scale": 2}}}})
    assert config.rules.vehicle("truck-7").speed_limit == 20
    assert config.rules.vehicle("truck-7").default_speed_limit == 30
    assert config.rules.vehicle("other").speed_limit is None
    assert config.rules.patient("bed-3").spo2_scale == 2
