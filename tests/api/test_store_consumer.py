"""The store's consumer against Vigil's real broker: the three topics into SQLite, resumed
from the offsets stored with the rows, and a database rebuilt from offset 0 that answers
exactly as the original."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from gateway.api import ApiSettings, create_app
from gateway.store import AlertDB, StoreConsumer
from tests.api.conftest import T0, transition, wait_until
from tests.conftest import BrokerProcess

pytestmark = pytest.mark.anyio


def create_topics(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    compact = {"cleanup.policy": "compact"}
    futures = admin.create_topics([NewTopic("alerts", 2, 1), NewTopic("device-state", 1, 1, config=compact),
                                   NewTopic("device-status", 1, 1, config=compact)])
    for f in futures.values():
        f.result(10)


class Log:
    """Produces to the broker and remembers each partition's end offset."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
        self.ends: dict[tuple[str, int], int] = {}

    def _delivered(self, err: Any, msg: Any) -> None:
        assert err is None, err
        key = (msg.topic(), msg.partition())
        self.ends[key] = max(self.ends.get(key, 0), msg.offset() + 1)

    def send(self, topic: str, key: str, value: dict[str, Any] | None, ts: int | None = None) -> None:
        self.producer.produce(topic, key=key.encode(), value=None if value is None else orjson.dumps(value),
                              timestamp=ts or 0, on_delivery=self._delivered)

    def alerts(self, *values: dict[str, Any]) -> None:
        for v in values:
            self.send("alerts", v["fingerprint"], v, v["ts"])

    def flush(self) -> dict[tuple[str, int], int]:
        assert self.producer.flush(15) == 0
        return dict(self.ends)


def scenario(rng: random.Random, n_devices: int = 12, steps: int = 120) -> list[dict[str, Any]]:
    """A plausible stream of transitions: episodes fire, update, resolve and fire again;
    some transitions are written twice (a processor restarted)."""
    out: list[dict[str, Any]] = []
    open_: dict[str, tuple[int, int, str]] = {}  # fingerprint -> (started, revision, severity)
    t = T0
    rules = [("overspeed", "vehicle", "truck"), ("geofence:depot", "vehicle", "truck"),
             ("news2", "patient", "bed"), ("threshold:spo2_low", "patient", "bed")]
    for _ in range(steps):
        t += rng.randint(1, 5000)
        rule, kind, prefix = rng.choice(rules)
        subject = f"{prefix}-{rng.randrange(n_devices)}"
        fp = f"{rule}|{subject}"
        sev = rng.choice(["info", "minor", "major", "critical"])
        if fp not in open_:
            open_[fp] = (t, 0, sev)
            v = transition(rule, subject, kind=kind, severity=sev, ts=t)
        else:
            started, rev, _ = open_[fp]
            state = "resolved" if rng.random() < 0.3 else "updated"
            v = transition(rule, subject, kind=kind, severity=sev, ts=t, started=started, revision=rev + 1,
                           state=state, details={"step": rev + 1})
            if state == "resolved":
                del open_[fp]
            else:
                open_[fp] = (started, rev + 1, sev)
        out.append(v)
        if rng.random() < 0.1:
            out.append(dict(v))  # at-least-once copy
    return out


def device_records(log: Log, rng: random.Random) -> None:
    for i in range(12):
        for kind, prefix in (("vehicle", "truck"), ("patient", "bed")):
            device = f"{prefix}-{i}"
            for k in range(3):  # newer snapshots replace older ones
                latest = ({"lat": 48 + rng.random(), "lon": 11 + rng.random(), "speed": rng.random() * 30,
                           "ignition": True} if kind == "vehicle" else
                          {"heart_rate": 60 + k, "spo2": 95, "resp_rate": 14, "temp_c": 37.0, "sys_bp": 120,
                           "dia_bp": 80, "on_oxygen": False, "consciousness": "A", "probe_off": False})
                log.send("device-state", device, {
                    "device": device, "kind": kind, "ts": T0 + k * 1000, "latest": latest,
                    "news2": None if kind == "vehicle" else {"total": k, "risk": "low", "scores": {}, "missing": []},
                    "window": {"start": T0, "end": T0 + k * 1000, "count": k}, "alerts": []})
            log.send("device-status", device, {
                "device": device, "state": rng.choice(["online", "offline"]), "version": "0.1.0",
                "outbox_depth": rng.randrange(10), "outbox_bytes": 100, "dropped": 0, "ts": T0, "received": T0 + 5})


async def answers(db: AlertDB) -> dict[str, Any]:
    """What a client sees: every page of alerts, each alert with its history, every device.
    Change numbers are left out: with two partitions their interleaving is the consumer's."""
    app = create_app(ApiSettings(db_path=db.path), db=db)
    token, _ = app.state.tokens.create("reader", ["read"])
    out: dict[str, Any] = {"alerts": [], "details": {}, "devices": []}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        cursor = None
        while True:
            body = (await c.get("/alerts", params={"limit": 25, **({"cursor": cursor} if cursor else {})})).json()
            out["alerts"] += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        for a in out["alerts"]:
            detail = (await c.get(f"/alerts/{a['id']}")).json()
            for h in detail["history"]:
                h.pop("change")
            out["details"][a["id"]] = detail
        out["devices"] = (await c.get("/devices", params={"limit": 1000})).json()["items"]
        for state in ("firing", "acknowledged", "resolved"):
            out[state] = (await c.get("/alerts", params={"state": state, "limit": 1000})).json()
    return out


def consume(db: AlertDB, bootstrap: str, ends: dict[tuple[str, int], int]) -> None:
    consumer = StoreConsumer(db, bootstrap, discover_every=0.2).start()
    try:
        wait_until(lambda: db.stored_offsets() == ends, what=f"the store to reach {ends}")
    finally:
        consumer.stop()


async def test_store_consumes_resumes_and_rebuilds_to_the_same_answers(broker: BrokerProcess, tmp_path: Path) -> None:
    create_topics(broker.bootstrap)
    rng = random.Random(7)
    log = Log(broker.bootstrap)
    stream = scenario(rng)
    half = len(stream) // 2
    log.alerts(*stream[:half])
    device_records(log, rng)
    first_ends = log.flush()

    db = AlertDB(tmp_path / "alerts.db")
    consume(db, broker.bootstrap, first_ends)
    # a second consumer on the same file starts where the first stopped: nothing twice
    log.alerts(*stream[half:])
    ends = log.flush()
    consume(db, broker.bootstrap, ends)

    unique = {(v["fingerprint"], v["started"], v["revision"]) for v in stream}
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM history WHERE source = 'log'").fetchone()[0] == len(unique)
        assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 24
    original = await answers(db)
    assert len(original["alerts"]) == len({v["fingerprint"] for v in stream})
    assert original["resolved"]["items"] and original["firing"]["items"]
    db.close()

    # drop the file, replay the topics from offset 0: the same answers
    (tmp_path / "alerts.db").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / f"alerts.db{extra}").unlink(missing_ok=True)
    rebuilt_db = AlertDB(tmp_path / "alerts.db")
    consume(rebuilt_db, broker.bootstrap, ends)
    rebuilt = await answers(rebuilt_db)
    rebuilt_db.close()
    assert rebuilt == original


async def test_cluster_view_and_health_with_a_real_log(broker: BrokerProcess, tmp_path: Path) -> None:
    create_topics(broker.bootstrap)
    log = Log(broker.bootstrap)
    log.alerts(transition("overspeed", "truck-1"))
    ends = log.flush()
    app = create_app(ApiSettings(db_path=tmp_path / "alerts.db", bootstrap=broker.bootstrap))
    db: AlertDB = app.state.db
    token, _ = app.state.tokens.create("ops", ["read"])
    consumer = StoreConsumer(db, broker.bootstrap, discover_every=0.2).start()
    app.state.consumer = consumer
    try:
        wait_until(lambda: db.stored_offsets().get(("alerts", 0), 0) + db.stored_offsets().get(("alerts", 1), 0)
                   == sum(ends.values()), what="the alert in the store")
        wait_until(lambda: consumer.status.lag and consumer.status.total_lag == 0, what="lag known")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     headers={"Authorization": f"Bearer {token}"}) as c:
            health = (await c.get("/healthz")).json()
            assert health == {"status": "ok", "db": True, "store_running": True, "store_lag": 0,
                              "store_error": None, "last_change": 1}
            cluster = (await c.get("/cluster")).json()
            topics = {t["name"]: t for t in cluster["topics"]}
            assert {"alerts", "device-state", "device-status"} <= set(topics)
            assert len(topics["alerts"]["partitions"]) == 2
            # the store commits its offsets to its group too (after its own transaction), so
            # the cluster view shows its lag
            for _ in range(100):
                groups = {g["group"]: g for g in (await c.get("/cluster")).json()["groups"]}
                if "vigil-alert-store" in groups:
                    break
                await anyio.sleep(0.1)
            assert groups["vigil-alert-store"]["lag"] == 0
            metrics = (await c.get("/metrics")).text
            assert 'vigil_api_alerts{severity="major",state="firing"} 1.0' in metrics
            assert "vigil_store_lag_records" in metrics
    finally:
        consumer.stop()
        db.close()


def test_a_locked_database_delays_the_store_and_loses_nothing(broker: BrokerProcess, tmp_path: Path) -> None:
    create_topics(broker.bootstrap)
    db = AlertDB(tmp_path / "alerts.db", busy_timeout_s=0.2)
    consumer = StoreConsumer(db, broker.bootstrap, discover_every=0.2).start()
    try:
        wait_until(lambda: consumer.status.assigned, what="the store's partitions")
        blocker = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # someone holds the write lock (a backup, a long query)
        log = Log(broker.bootstrap)
        log.alerts(*(transition("overspeed", f"truck-{i}", ts=T0 + i) for i in range(20)))
        ends = log.flush()
        wait_until(lambda: (consumer.status.last_error or "").startswith("database"), what="the store to notice")
        assert consumer.status.running
        blocker.execute("ROLLBACK")
        blocker.close()
        wait_until(lambda: db.stored_offsets() == {k: v for k, v in ends.items()}, what="the store to catch up")
        assert consumer.status.last_error is None
        with db.connection() as conn:
            assert conn.execute("SELECT count(*) FROM history").fetchone()[0] == 20
    finally:
        consumer.stop()
        db.close()
