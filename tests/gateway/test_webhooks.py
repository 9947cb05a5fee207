"""Webhooks: filters, the signature scheme, the retry policy, and deliveries to a real HTTP
receiver on loopback that checks every signature and fails on request."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

import gateway.webhooks
from gateway.webhooks import (
    Dispatcher,
    RetryPolicy,
    WebhookError,
    WebhookFilter,
    Webhooks,
    parse_retry_after,
    sign,
    transition_id,
    verify,
)
from tests.conftest import ROOT, free_port
from tests.gateway.conftest import wait_until

SECRET = "s3cret-s3cret-s3cret"


def alert(state: str = "fired", *, rule: str = "overspeed", subject: str = "truck-7", kind: str = "vehicle",
          severity: str = "major", started: int = 1_764_072_000_000, revision: int = 0) -> dict[str, Any]:
    return {"fingerprint": f"{rule}|{subject}", "rule": rule, "subject": subject, "device_kind": kind,
            "state": state, "severity": severity, "ts": started + revision * 1000, "started": started,
            "message": "speed above 33.3 m/s", "details": {"speed": 35.1}, "revision": revision}


# --- the pure core -----------------------------------------------------------------------


def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp() -> None:
    body = b'{"id":"d1","type":"alert.fired"}'
    sig = sign(SECRET, "1764072000", body)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", sig)
    assert verify(SECRET, "1764072000", body, sig, now=1764072000 + 10)
    assert not verify(SECRET, "1764072000", body + b" ", sig, now=1764072000)  # body changed
    assert not verify("another-secret-value", "1764072000", body, sig, now=1764072000)
    assert not verify(SECRET, "1764072001", body, sig, now=1764072000)  # timestamp changed
    assert not verify(SECRET, "1764072000", body, sig, now=1764072000 + 301)  # a replay, later
    assert not verify(SECRET, "1764072000", body, sig.removeprefix("sha256="), now=1764072000)
    assert not verify(SECRET, "-5", body, sig, now=1764072000)


def test_the_verify_function_documented_for_receivers_is_the_real_one() -> None:
    doc = gateway.webhooks.__doc__ or ""
    snippet = doc[doc.index("    import hashlib, hmac, time"):doc.index("Retries:")]
    ns: dict[str, Any] = {}
    exec("\n".join(line[4:] for line in snippet.splitlines()), ns)  # the receiver's copy
    body = b'{"a":1}'
    for ts, sig, now in [("100", sign(SECRET, "100", body), 150), ("100", sign(SECRET, "100", body), 500),
                         ("100", sign(SECRET, "101", body), 100), ("x", "sha256=00", 0)]:
        assert ns["verify"](SECRET, ts, body, sig, now=now) == verify(SECRET, ts, body, sig, now=now)


def test_the_retry_policy_backs_off_gives_up_and_honours_retry_after() -> None:
    p = RetryPolicy(max_attempts=5, base_s=1, factor=2, jitter=0.25)
    assert p.decide(1, 200).outcome == "delivered" and p.decide(3, 204).outcome == "delivered"
    for code in (400, 401, 403, 404, 410, 422, 301):
        assert p.decide(1, code).outcome == "failed", code
    delays = [p.decide(n, 503, rnd=0.99).delay_s or 0.0 for n in range(1, 5)]
    assert delays == sorted(delays) and len(set(delays)) == 4  # grows even with the most jitter
    assert [p.decide(n, None, rnd=0.0).delay_s for n in range(1, 5)] == [1, 2, 4, 8]
    assert p.decide(5, 500).outcome == "failed" and p.decide(5, None).outcome == "failed"
    assert p.decide(2, 429, retry_after_s=30).delay_s == 30
    assert p.decide(2, 503, retry_after_s=7).delay_s == 7
    assert RetryPolicy(max_delay_s=60, base_s=10).decide(7, 500).delay_s == 60
    assert parse_retry_after("120", now=0) == 120
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now.timestamp()) == 90
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


def test_filters_match_severity_rules_devices_kinds_and_states() -> None:
    assert WebhookFilter().matches(alert())
    assert WebhookFilter(min_severity="major").matches(alert(severity="critical"))
    assert not WebhookFilter(min_severity="major").matches(alert(severity="minor"))
    assert WebhookFilter(rules=("geofence:*",)).matches(alert(rule="geofence:depot"))
    assert not WebhookFilter(rules=("geofence:*", "news2")).matches(alert(rule="overspeed"))
    assert WebhookFilter(devices=("truck-7",), device_kinds=("vehicle",)).matches(alert())
    assert not WebhookFilter(devices=("truck-8",)).matches(alert())
    assert not WebhookFilter(device_kinds=("patient",)).matches(alert())
    assert WebhookFilter(states=("fired", "resolved")).matches(alert("resolved"))
    assert not WebhookFilter(states=("fired",)).matches(alert("updated"))
    # the store's history rows: kind instead of state, the fields in the alert snapshot
    row = {"id": 41, "kind": "acknowledged", "fingerprint": "news2|bed-3", "alert": alert(
        rule="news2", subject="bed-3", kind="patient", severity="critical")}
    assert WebhookFilter(min_severity="critical", states=("acknowledged",), device_kinds=("patient",)).matches(row)
    assert WebhookFilter.from_json(WebhookFilter(min_severity="info", rules=("a",)).to_json()) == \
        WebhookFilter(min_severity="info", rules=("a",))
    for bad in ({"min_severity": "loud"}, {"states": ["exploded"]}, {"rules": "overspeed"}, {"colour": ["red"]}):
        with pytest.raises(WebhookError):
            WebhookFilter.from_json(bad)


def test_a_transition_is_identified_by_fingerprint_started_revision_and_state() -> None:
    assert transition_id(alert()) == "overspeed|truck-7|1764072000000|0|fired"
    assert transition_id(alert("updated", revision=2)) != transition_id(alert("updated", revision=3))
    assert transition_id({**alert(), "transition_id": 77}) == "77"
    with pytest.raises(WebhookError, match="fingerprint"):
        transition_id({"state": "fired"})


# --- storage -----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(tmp_path / "alerts.db")
    d.enable_wal()
    yield d
    d.close()


def test_subscriptions_are_created_listed_fetched_and_deleted(db: Database) -> None:
    hooks = Webhooks(db)
    a = hooks.create("https://pager.example/hook", filter={"min_severity": "critical"}, description="pager")
    b = hooks.create("http://127.0.0.1:9/x", secret=SECRET)
    assert len(a.secret) >= 32 and b.secret == SECRET
    assert [s.id for s in hooks.list()] == [a.id, b.id]
    got = hooks.get(a.id)
    assert got == a and got.filter.min_severity == "critical"
    assert "secret" not in a.to_json() and a.to_json(with_secret=True)["secret"] == a.secret
    assert datetime.fromisoformat(a.created).utcoffset() == timedelta(0)
    assert hooks.delete(a.id) and not hooks.delete(a.id)
    assert hooks.get(a.id) is None and [s.id for s in hooks.list()] == [b.id]
    for bad in ("ftp://x/y", "not a url", "http://"):
        with pytest.raises(WebhookError, match="url"):
            hooks.create(bad)
    with pytest.raises(WebhookError, match="16"):
        hooks.create("https://x.example/", secret="short")


def test_enqueue_records_one_delivery_per_matching_subscription_once_per_transition(db: Database) -> None:
    hooks = Webhooks(db)
    every = hooks.create("https://a.example/")
    critical = hooks.create("https://b.example/", filter={"min_severity": "critical"})
    patients = hooks.create("https://c.example/", filter={"device_kinds": ["patient"], "states": ["fired"]})
    off = hooks.create("https://d.example/", enabled=False)
    first = hooks.enqueue(alert())
    assert len(first) == 1 and hooks.enqueue(alert()) == []  # the same transition again: nothing new
    assert len(hooks.enqueue(alert("updated", severity="critical", revision=1))) == 2
    assert len(hooks.enqueue(alert(rule="news2", subject="bed-3", kind="patient"))) == 2
    assert len(hooks.enqueue(alert("resolved", rule="news2", subject="bed-3", kind="patient", revision=1))) == 1
    count = {s.id: len(hooks.deliveries(s.id)) for s in (every, critical, patients, off)}
    assert count == {every.id: 4, critical.id: 1, patients.id: 1, off.id: 0}
    d = hooks.delivery(first[0])
    assert d is not None and d["status"] == "pending" and d["attempts"] == 0 and d["log"] == []
    assert d["body"]["alert"] == alert() and d["body"]["type"] == "alert.fired" and d["body"]["webhook"] == every.id
    assert d["body"]["id"] == first[0] and d["event"] == "alert.fired"
    assert hooks.delete(every.id)
    assert {x["status"] for x in hooks.deliveries(every.id)} == {"cancelled"}


# --- delivery to a real receiver ---------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class Receiver:
    """A local HTTP server: answers each path's scripted responses in turn, then 200; checks
    every request's signature with the path's secret (401 when it does not verify)."""

    server: ThreadingHTTPServer
    script: dict[str, list[tuple[int, dict[str, str], float]]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def on(self, path: str, *responses: int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], float],
           secret: str = SECRET) -> str:
        self.secrets[path] = secret
        self.script[path] = [(r, {}, 0.0) if isinstance(r, int) else (r[0], r[1], r[2] if len(r) > 2 else 0.0)
                             for r in responses]
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = verify(rec.secrets.get(self.path, ""), self.headers.get("X-Vigil-Timestamp", ""), body,
                        self.headers.get("X-Vigil-Signature", ""))
            with rec.lock:
                rec.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, ok))
                script = rec.script.setdefault(self.path, [])
                status, headers, delay = script.pop(0) if script else (200, {}, 0.0)
            time.sleep(delay)
            if not ok:
                status, headers = 401, {}
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out and left: not the receiver's problem

    server = Server(("127.0.0.1", 0), Handler)
    rec = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


FAST = RetryPolicy(max_attempts=4, base_s=0.05, factor=2, jitter=0.5)


def _settled(hooks: Webhooks, delivery: str) -> dict[str, Any]:
    wait_until(lambda: (hooks.delivery(delivery) or {}).get("status") != "pending", 30, f"delivery {delivery}")
    d = hooks.delivery(delivery)
    assert d is not None
    return d


def test_a_delivery_failing_with_500_then_503_is_retried_with_growing_delays_then_delivered(
        db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    sub = hooks.create(receiver.on("/hook", 500, 503), secret=SECRET)
    with Dispatcher(db, FAST, poll_s=0.05) as dispatcher:
        hooks.on_enqueue = dispatcher.notify
        [delivery] = hooks.enqueue(alert())
        d = _settled(hooks, delivery)
    got = receiver.at("/hook")
    assert len(got) == 3 and all(r.signature_ok for r in got)
    assert {r.headers["x-vigil-delivery"] for r in got} == {delivery}
    assert {r.body for r in got} == {got[0].body}  # every retry sends the same bytes
    assert all(r.headers["x-vigil-event"] == "alert.fired" and r.headers["content-type"] == "application/json"
               for r in got)
    body = json.loads(got[0].body)
    assert body["alert"] == alert() and body["webhook"] == sub.id and body["id"] == delivery
    assert body["transition"] == "overspeed|truck-7|1764072000000|0|fired"
    assert d["status"] == "delivered" and d["attempts"] == 3 and d["last_status_code"] == 200
    log = d["log"]
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log] == [
        (1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered")]
    assert log[0]["retry_in_s"] < log[1]["retry_in_s"]  # the scheduled delays grow
    assert all(a["duration_ms"] >= 0 and datetime.fromisoformat(a["at"]).utcoffset() == timedelta(0) for a in log)


def test_retry_after_is_honoured_on_429(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/busy", (429, {"Retry-After": "1"})), secret=SECRET)
    with Dispatcher(db, FAST, poll_s=0.05):
        [delivery] = hooks.enqueue(alert())
        d = _settled(hooks, delivery)
    assert [(a["status_code"], a["outcome"], a["retry_in_s"]) for a in d["log"]] == [
        (429, "retry", 1.0), (200, "delivered", None)]


def test_a_receiver_that_keeps_failing_is_given_up_after_max_attempts(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/down", *[503] * 10), secret=SECRET)
    hooks.create(f"http://127.0.0.1:{free_port()}/nothing-listens", secret=SECRET)
    with Dispatcher(db, FAST, poll_s=0.05):
        a, b = hooks.enqueue(alert())
        da, db_ = _settled(hooks, a), _settled(hooks, b)
    assert len(receiver.at("/down")) == 4
    for d in (da, db_):
        assert d["status"] == "failed" and d["attempts"] == 4
        assert [x["outcome"] for x in d["log"]] == ["retry", "retry", "retry", "failed"]
    assert {x["status_code"] for x in da["log"]} == {503}
    assert all(x["status_code"] is None and "Connect" in x["error"] for x in db_["log"])


def test_a_4xx_fails_at_once_without_retry(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/gone", 410), secret=SECRET)
    hooks.create(receiver.url("/wrong-secret"), secret="not-the-receivers-secret")
    receiver.secrets["/wrong-secret"] = SECRET
    with Dispatcher(db, FAST, poll_s=0.05):
        deliveries = hooks.enqueue(alert())
        results = [_settled(hooks, d) for d in deliveries]
    assert len(receiver.at("/gone")) == 1 and len(receiver.at("/wrong-secret")) == 1
    assert not receiver.at("/wrong-secret")[0].signature_ok
    assert sorted((d["status"], d["attempts"], d["last_status_code"]) for d in results) == [
        ("failed", 1, 401), ("failed", 1, 410)]


def test_a_timeout_is_retried(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/slow", (200, {}, 1.5)), secret=SECRET)
    with Dispatcher(db, FAST, poll_s=0.05, timeout_s=0.3):
        [delivery] = hooks.enqueue(alert())
        d = _settled(hooks, delivery)
    assert d["status"] == "delivered"
    assert [(x["outcome"], x["status_code"]) for x in d["log"]] == [("retry", None), ("delivered", 200)]
    assert "timeout" in d["log"][0]["error"]


def test_pending_deliveries_are_sent_after_the_dispatcher_is_killed_and_restarted(
        db: Database, receiver: Receiver, tmp_path: Path) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/later", *[503] * 1000), secret=SECRET)
    [delivery] = hooks.enqueue(alert())
    path = str(tmp_path / "alerts.db")
    code = ("import sys, time\n"
            "from gateway.webhooks import Dispatcher, RetryPolicy\n"
            "Dispatcher(sys.argv[1], RetryPolicy(max_attempts=1000, base_s=0.1, factor=1), poll_s=0.05).start()\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path], cwd=ROOT)
    try:
        wait_until(lambda: len((hooks.delivery(delivery) or {}).get("log", [])) >= 2, 30, "two failed attempts")
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: nothing is cleaned up
        proc.wait(10)
    before = hooks.delivery(delivery)
    assert before is not None and before["status"] == "pending"
    with receiver.lock:
        receiver.script["/later"] = []  # the receiver recovers
    with Dispatcher(db, FAST, poll_s=0.05):  # a new process would do the same
        d = _settled(hooks, delivery)
    assert d["status"] == "delivered"
    assert [x["outcome"] for x in d["log"]][-1] == "delivered"
    assert len(d["log"]) >= len(before["log"]) + 1 and all(r.signature_ok for r in receiver.at("/later"))


def test_disabled_subscriptions_wait_and_failed_deliveries_can_be_sent_again(
        db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    paused = hooks.create(receiver.on("/paused"), secret=SECRET)
    broken = hooks.create(receiver.on("/broken", 400), secret=SECRET)
    [p, b] = hooks.enqueue(alert())
    assert hooks.set_enabled(paused.id, False)
    with Dispatcher(db, FAST, poll_s=0.05):
        assert _settled(hooks, b)["status"] == "failed"
        time.sleep(0.3)
        assert receiver.at("/paused") == [] and (hooks.delivery(p) or {})["status"] == "pending"
        hooks.set_enabled(paused.id, True)
        assert _settled(hooks, p)["status"] == "delivered"
        assert hooks.redeliver(b) and not hooks.redeliver(p)
        d = _settled(hooks, b)
    assert d["status"] == "delivered" and [x["status_code"] for x in d["log"]] == [400, 200]
    assert broken.id in {x["webhook_id"] for x in hooks.deliveries(status="delivered")}
    assert hooks.prune(3600) == 0  # all finished just now
    hooks.enqueue(alert("resolved", revision=1))  # pending: never pruned
    assert hooks.prune(-1) == 2
    assert [x["status"] for x in hooks.deliveries()] == ["pending", "pending"]
    assert hooks.delivery(b) is None and hooks.attempts(b) == []


def test_an_in_memory_database_is_refused_by_the_dispatcher() -> None:
    mem = Database(memory=True)
    try:
        with pytest.raises(WebhookError, match="file"):
            Dispatcher(mem)
    finally:
        mem.close()


def test_enqueue_inside_the_callers_transaction_is_the_callers_to_commit(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)  # the store's kind of connection
    try:
        hooks = Webhooks(Database(conn))
        hooks.create("https://a.example/")
        conn.execute("BEGIN IMMEDIATE")
        assert len(hooks.enqueue(alert())) == 1
        conn.execute("ROLLBACK")  # the store's transaction failed: no delivery of what it did not store
        assert hooks.deliveries() == []
        conn.execute("BEGIN IMMEDIATE")
        hooks.enqueue(alert())
        conn.execute("COMMIT")
        assert len(hooks.deliveries()) == 1
    finally:
        conn.close()


def test_many_deliveries_to_many_receivers_each_arrive_once(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    paths = [f"/r{i}" for i in range(3)]
    for path in paths:
        hooks.create(receiver.on(path, 503), secret=SECRET)  # each fails once, then accepts
    with Dispatcher(db, FAST, poll_s=0.05, concurrency=4) as dispatcher:
        hooks.on_enqueue = dispatcher.notify
        ids = [i for n in range(20) for i in hooks.enqueue(alert(subject=f"truck-{n}"))]
        assert len(ids) == 60
        wait_until(lambda: len(hooks.deliveries(status="delivered", limit=100)) == 60, 60, "60 deliveries")
    for path in paths:
        got = receiver.at(path)
        assert all(r.signature_ok for r in got)
        assert len(got) == 21  # one 503, then each of the 20 once
        assert len({r.headers["x-vigil-delivery"] for r in got}) == 20


def test_stop_waits_for_the_request_in_flight_and_records_it(db: Database, receiver: Receiver) -> None:
    hooks = Webhooks(db)
    hooks.create(receiver.on("/slow-ok", (200, {}, 1.0)), secret=SECRET)
    dispatcher = Dispatcher(db, FAST, poll_s=0.05, timeout_s=5).start()
    try:
        [delivery] = hooks.enqueue(alert())
        wait_until(lambda: len(receiver.at("/slow-ok")) == 1, 30, "the request to arrive")
    finally:
        dispatcher.stop()  # while the receiver is still answering
    d = hooks.delivery(delivery)
    assert d is not None and d["status"] == "delivered"
    assert [(x["status_code"], x["outcome"]) for x in d["log"]] == [(200, "delivered")]
    assert not any(t.name.startswith("vigil-webhook") for t in threading.enumerate())
