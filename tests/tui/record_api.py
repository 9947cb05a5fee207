"""Records the API answers the snapshot tests replay (``tests/tui/recorded_api.json``).

The real API over a real SQLite file fed with records in the topics' contracts, and a
real broker behind ``/cluster`` (topics, a consumer group with lag, telemetry produced
between rounds). Three rounds of ``GET /devices`` and ``GET /cluster`` (the devices move,
the log grows), so the replay has sparklines and an events/s rate.

Run again after a change of the API's shapes::

    .venv/bin/python -m tests.tui.record_api
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi.testclient import TestClient

from gateway.store import alert_id_for
from tests.api.conftest import T0, make_api, transition
from tests.conftest import BrokerProcess
from tests.tui.conftest import patient, status, vehicle

OUT = Path(__file__).with_name("recorded_api.json")

VEHICLES = {  # id: (lat, lon, speeds per round in m/s, status)
    "truck-1": (48.13712, 11.57540, [13.9, 15.2, 16.7], "online"),
    "truck-2": (48.15001, 11.54002, [0.0, 0.0, 0.0], "online"),
    "truck-3": (48.20010, 11.60020, [30.1, 34.7, 36.2], "online"),
    "truck-4": (48.09003, 11.49004, [22.2, 20.8, 19.4], "offline"),
    "van-5": (48.11005, 11.62006, [8.3, 11.1, 9.7], "online"),
}
PATIENTS = {  # id: (news2 total, risk, heart rates per round, spo2, rr, temp, sys, dia, probe_off, status)
    "bed-1": (0, "low", [72, 74, 71], 98, 14, 36.8, 124, 78, False, "online"),
    "bed-2": (3, "low-medium", [88, 90, 92], 96, 22, 37.2, 118, 76, False, "online"),
    "bed-3": (5, "medium", [104, 108, 112], 95, 21, 38.4, 108, 70, False, "online"),
    "bed-4": (8, "high", [121, 126, 131], 90, 25, 38.9, 96, 58, False, "online"),
    "bed-5": (1, "low", [0, 0, 0], 0, 16, 36.9, 130, 82, True, "offline"),
}


def _feed_devices(api: Any, rnd: int) -> None:
    ts = T0 + rnd * 2000
    for d, (la, lo, speeds, st) in VEHICLES.items():
        alerts = ["overspeed|truck-3"] if d == "truck-3" else []
        api.feed(vehicle(d, speeds[rnd], lat=la + rnd * 0.0004, lon=lo + rnd * 0.0003, ts=ts,
                         alerts=alerts), topic="device-state")
        api.feed(status(d, st, ts=ts), topic="device-status")
    for d, (total, risk, hrs, spo2, rr, temp, sys_bp, dia, off, st) in PATIENTS.items():
        api.feed(patient(d, total, risk, hr=hrs[rnd], spo2=spo2 - rnd if spo2 else 0, rr=rr + rnd,
                         temp=temp, sys_bp=sys_bp - rnd, dia_bp=dia, ts=ts, probe_off=off,
                         alerts=["news2|bed-4"] if d == "bed-4" else []),
                 topic="device-state")
        api.feed(status(d, st, ts=ts), topic="device-status")


def _feed_alerts(api: Any) -> None:
    api.feed(transition("overspeed", "truck-3", severity="major", ts=T0,
                        message="speed above 33.3 m/s", details={"speed": 34.7}),
             transition("geofence:depot", "van-5", severity="minor", ts=T0 + 100,
                        message="left zone depot"),
             transition("fix_lost", "truck-2", severity="minor", ts=T0 + 200, message="no GPS fix"),
             transition("news2", "bed-4", kind="patient", severity="critical", ts=T0 + 300,
                        message="NEWS2 8 (high)"),
             transition("threshold:spo2_low", "bed-4", kind="patient", severity="major",
                        ts=T0 + 400, message="SpO2 below 92 %"),
             transition("probe_off", "bed-5", kind="patient", severity="info", ts=T0 + 500,
                        message="SpO2 probe off"))
    api.feed(transition("fix_lost", "truck-2", state="resolved", severity="minor", ts=T0 + 1500,
                        started=T0 + 200, revision=1, message="GPS fix back"))
    api.db.acknowledge(alert_id_for("geofence:depot|van-5"), "dispatch", "driver called", at=T0 + 900)


def _produce(producer: Producer, n: int, start: int) -> None:
    for seq in range(start, start + n):
        producer.produce("telemetry", key=b"truck-1", partition=seq % 3,
                         value=orjson.dumps({"device": "truck-1", "seq": seq, "ts": T0 + seq,
                                             "kind": "gps", "data": {}}))
    assert producer.flush(15) == 0


def record() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vigil-record-"))
    broker = BrokerProcess(tmp / "broker").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for fut in admin.create_topics([
                NewTopic("telemetry", 3, 1), NewTopic("alerts", 1, 1),
                NewTopic("device-state", 1, 1, config={"cleanup.policy": "compact"}),
                NewTopic("device-status", 1, 1, config={"cleanup.policy": "compact"})]).values():
            fut.result(10)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        _produce(producer, 300, 0)
        group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "vigil-processors",
                          "enable.auto.commit": False})
        group.commit(offsets=[TopicPartition("telemetry", p, 90) for p in range(3)],
                     asynchronous=False)
        group.close()
        api = make_api(tmp, bootstrap=broker.bootstrap, run_store=False)
        out: dict[str, Any] = {"devices": [], "cluster": []}
        with TestClient(api.app, headers=api.auth("admin")) as c:
            _feed_alerts(api)
            for rnd in range(3):
                _feed_devices(api, rnd)
                if rnd:
                    _produce(producer, 10 * rnd, 300 + 100 * rnd)
                out["devices"].append(c.get("/devices", params={"limit": 1000}).json())
                out["cluster"].append(c.get("/cluster").json())
            out["healthz"] = c.get("/healthz").json()
            out["alerts_active"] = c.get("/alerts", params=[("limit", "1000"), ("state", "firing"),
                                                            ("state", "acknowledged")]).json()
            out["alerts_resolved"] = c.get("/alerts", params=[("limit", "1000"),
                                                              ("state", "resolved")]).json()
            out["alerts_by_device"] = {
                d: c.get("/alerts", params={"limit": 1000, "device": d}).json()
                for d in [*VEHICLES, *PATIENTS]}
        api.db.close()
        return out
    finally:
        broker.stop()


if __name__ == "__main__":
    OUT.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
