"""Benchmarks of the alert store and the HTTP API (``make bench`` runs it; not a test).

1. ingestion: N transitions through ``AlertDB.ingest`` (the consumer's write path: one
   transaction per batch of 500, dedup, history row with snapshot, offsets);
2. ``GET /alerts`` over uvicorn on loopback with N stored alerts: p50/p99 of the first page
   and of deep pages (cursor) for several filters;
3. SSE fan-out: a real broker, the store's consumer and 200 concurrent ``/alerts/stream``
   clients; the time from an alert's commit in the log (the producer's delivery report,
   acks=all) to its arrival at each client.

    PYTHONPATH=. .venv/bin/python tests/perf/bench_api.py [--alerts 1000000] [--clients 200]

Here (2 CPUs shared with other work, load ~2.5), 1,000,000 alerts (1.33 M transitions,
a 1.5 GB file): ingestion 5,700 transitions/s; GET /alerts first page p50 1.5-6.4 ms,
p99 3-51 ms, deep pages p50 4.6-6.4 ms, p99 6-31 ms over the filters above; SSE with 200
clients (in the benchmark's own process), commit in the log -> client p50 24 ms, p99 43 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.api import ApiSettings, create_app
from gateway.store import AlertDB, LogRecord
from tests.api.conftest import T0, Server, transition

RULES = [("overspeed", "vehicle"), ("geofence:depot", "vehicle"), ("idling", "vehicle"),
         ("harsh_braking", "vehicle"), ("news2", "patient"), ("threshold:spo2_low", "patient"),
         ("probe_off", "patient"), ("no_data", "patient")]
SEVERITIES = ["info", "minor", "major", "critical"]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def fill(db: AlertDB, n: int, devices: int = 20000) -> float:
    """n alerts (each fired; a third later resolved); returns transitions per second."""
    rng = random.Random(1)
    batch: list[LogRecord] = []
    offset = 0
    start = time.perf_counter()
    written = 0
    for i in range(n):
        rule, kind = RULES[i % len(RULES)]
        subject = f"{'truck' if kind == 'vehicle' else 'bed'}-{i % devices}-{i // devices}"  # distinct
        ts = T0 + i * 10
        v = transition(rule, subject, kind=kind, severity=rng.choice(SEVERITIES), ts=ts)
        batch.append(LogRecord("alerts", 0, offset, None, orjson.dumps(v)))
        offset += 1
        if rng.random() < 0.33:
            r = transition(rule, subject, kind=kind, severity=v["severity"], ts=ts + 5, started=ts,
                           revision=1, state="resolved")
            batch.append(LogRecord("alerts", 0, offset, None, orjson.dumps(r)))
            offset += 1
        if len(batch) >= 500:
            written += len(batch)
            db.ingest(batch)
            batch = []
    written += len(batch)
    db.ingest(batch)
    return written / (time.perf_counter() - start)


def bench_queries(url: str, token: str, rounds: int) -> list[tuple[str, float, float, float, float]]:
    queries: list[tuple[str, dict[str, Any]]] = [
        ("no filter", {}),
        ("state=firing", {"state": "firing"}),
        ("severity=critical", {"severity": "critical"}),
        ("rule=news2&state=firing", {"rule": "news2", "state": "firing"}),
        ("device=truck-42-7", {"device": "truck-42-7"}),
        ("device_kind=patient&min_severity=major", {"device_kind": "patient", "min_severity": "major"}),
        ("since/until (1 h)", {"since": "2026-09-21T16:00:00Z", "until": "2026-09-21T17:00:00Z"}),
    ]
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for name, params in queries:
            first: list[float] = []
            deep: list[float] = []
            cursor = None
            for _ in range(rounds):
                t = time.perf_counter()
                body = c.get("/alerts", params={**params, "limit": 100}).json()
                first.append(time.perf_counter() - t)
                cursor = body["next_cursor"] or cursor
            for _ in range(rounds):  # walk forward page after page
                if cursor is None:
                    break
                t = time.perf_counter()
                body = c.get("/alerts", params={**params, "limit": 100, "cursor": cursor}).json()
                deep.append(time.perf_counter() - t)
                cursor = body["next_cursor"]
            out.append((name, pct(first, .5) * 1e3, pct(first, .99) * 1e3,
                        pct(deep, .5) * 1e3 if deep else float("nan"),
                        pct(deep, .99) * 1e3 if deep else float("nan")))
    return out


def bench_sse(clients: int, alerts: int) -> tuple[float, float, float, int]:
    from confluent_kafka import Producer

    from tests.conftest import BrokerProcess

    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-sse-"))
    broker = BrokerProcess(tmp / "broker").start()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("alerts", 1, 1)])["alerts"].result(10)
    app = create_app(ApiSettings(db_path=tmp / "alerts.db", bootstrap=broker.bootstrap, keepalive_s=5))
    token, _ = app.state.tokens.create("bench", ["read"])
    committed: dict[str, float] = {}
    arrivals: list[float] = []
    connected: list[int] = []
    try:
        with Server(app) as server:
            async def client() -> None:
                async with httpx.AsyncClient(base_url=server.url, timeout=60, headers={
                        "Authorization": f"Bearer {token}"}) as c, c.stream("GET", "/alerts/stream") as r:
                    lines = r.aiter_lines()
                    await lines.__anext__()  # the first comment: connected
                    connected.append(1)
                    seen = 0
                    async for line in lines:
                        if line.startswith("data: "):
                            fp = orjson.loads(line[6:])["alert"]["fingerprint"]
                            arrivals.append(time.perf_counter() - committed[fp])
                            seen += 1
                            if seen == alerts:
                                return

            def run_clients() -> None:
                async def main() -> None:
                    await asyncio.gather(*(client() for _ in range(clients)))
                asyncio.run(main())

            while not (app.state.consumer and app.state.consumer.status.assigned):
                time.sleep(0.05)  # the store reads the topic
            t = threading.Thread(target=run_clients)
            t.start()
            while len(connected) < clients:
                time.sleep(0.05)
            producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
            for i in range(alerts):
                v = transition("overspeed", f"truck-{i}", ts=T0 + i)

                def delivered(err: Any, msg: Any, fp: str = v["fingerprint"]) -> None:
                    committed[fp] = time.perf_counter()

                producer.produce("alerts", key=v["fingerprint"].encode(), value=orjson.dumps(v),
                                 on_delivery=delivered)
                producer.flush(10)
                time.sleep(0.05)
            t.join(120)
    finally:
        broker.stop()
    return pct(arrivals, .5) * 1e3, pct(arrivals, .99) * 1e3, max(arrivals) * 1e3, len(arrivals)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sse-alerts", type=int, default=50)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-api-"))
    db = AlertDB(tmp / "alerts.db")
    rate = fill(db, args.alerts)
    with db.connection() as conn:
        stored = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
    print(f"ingest: {stored:,} alerts, {rate:,.0f} transitions/s through AlertDB.ingest "
          f"(file {os.path.getsize(tmp / 'alerts.db') / 1e6:.0f} MB)")
    app = create_app(ApiSettings(db_path=tmp / "alerts.db", run_webhooks=False), db=db)
    token, _ = app.state.tokens.create("bench", ["read"])
    with Server(app) as server:
        print(f"GET /alerts, limit=100, over HTTP/1.1 loopback, {args.rounds} requests each (ms)")
        print(f"{'filter':42} {'p50':>7} {'p99':>7} {'deep p50':>9} {'deep p99':>9}")
        for name, p50, p99, d50, d99 in bench_queries(server.url, token, args.rounds):
            print(f"{name:42} {p50:7.2f} {p99:7.2f} {d50:9.2f} {d99:9.2f}")
    db.close()
    p50, p99, worst, n = bench_sse(args.clients, args.sse_alerts)
    print(f"SSE: {args.clients} clients x {args.sse_alerts} alerts ({n} arrivals): commit in the log -> "
          f"client p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
