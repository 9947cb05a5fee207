"""Webhooks: subscriptions to alert changes, signed HTTP deliveries, retries, a delivery log.

Three layers:

* the pure core: ``WebhookFilter.matches``, ``sign``/``verify`` (the signature scheme),
  ``RetryPolicy.decide`` (retry or give up, and after how long), ``parse_retry_after``;
* ``Webhooks(db)``: subscriptions and deliveries in a SQLite file, through sqlite-utils
  (tables ``webhooks``, ``webhook_deliveries``, ``webhook_attempts``). ``enqueue(change)``
  records one pending delivery per matching enabled subscription, at most once per
  (subscription, transition);
* ``Dispatcher(db)``: one thread (plus a small pool of sender threads) that POSTs due
  deliveries with httpx and records every attempt. ``start()``/``stop()``; ``stop`` waits
  for the requests in flight (each bounded by ``timeout_s``) and records them.

What a receiver gets (one POST per delivery and attempt)::

    POST <url>
    Content-Type: application/json
    User-Agent: vigil-webhooks/1
    X-Vigil-Delivery: 6f1c...           (the same on every retry of this delivery)
    X-Vigil-Event: alert.fired          (alert.<state>)
    X-Vigil-Timestamp: 1764072000       (Unix seconds when this attempt was sent)
    X-Vigil-Signature: sha256=<hex>

    {"alert": {...the change as the store passed it...}, "created": "2026-...+00:00",
     "id": "<delivery id>", "transition": "<transition id>", "type": "alert.fired",
     "webhook": "<subscription id>"}

The signature is ``hex(HMAC-SHA256(key=secret, msg=timestamp + "." + raw_body))``, where
``timestamp`` is the ``X-Vigil-Timestamp`` header exactly as sent (ASCII digits) and
``raw_body`` the request body bytes exactly as received (do not re-serialise the JSON).
A receiver recomputes it, compares in constant time, and refuses a timestamp too far from
its clock (a replayed request carries an old timestamp, and changing it breaks the
signature); it drops repeats by ``X-Vigil-Delivery``. ``verify`` does the first two and
depends only on the standard library: copy it::

    import hashlib, hmac, time

    def verify(secret, timestamp, body, signature, tolerance_s=300, now=None):
        if not timestamp.isdigit() or not signature.startswith("sha256="):
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
            return False
        mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(mac.hexdigest(), signature[len("sha256="):])

Retries: a connection error, a timeout, a 5xx or a 429 is retried after
``base_s * factor**(attempt-1)``, times a random factor in ``[1, 1 + jitter)`` (so delays
grow from one attempt to the next while ``jitter < factor - 1``), capped at
``max_delay_s``; a ``Retry-After`` header (seconds or an HTTP date) on a 429 or 5xx
replaces that delay (capped at ``max_retry_after_s``). After ``max_attempts`` attempts the
delivery is ``failed``. Any other non-2xx (a 4xx, a redirect) fails it at once. A 2xx
makes it ``delivered``. Every attempt is a row of ``webhook_attempts`` (time, status code
or error, duration, what was decided, the delay chosen).

Deliveries are at least once: they are pending in the database until an attempt's outcome
is recorded, so after a crash or restart the next ``Dispatcher`` sends them (again, if the
crash came between the receiver's answer and the record). There is no ordering between
deliveries; a receiver orders one alert's transitions by ``started`` and ``revision``.
A disabled subscription receives nothing new and its pending deliveries wait; deleting it
cancels them (the log stays).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import logging
import random
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from sqlite_utils import Database

__all__ = [
    "SEVERITIES",
    "Decision",
    "Dispatcher",
    "RetryPolicy",
    "Subscription",
    "WebhookError",
    "WebhookFilter",
    "Webhooks",
    "parse_retry_after",
    "sign",
    "transition_id",
    "verify",
]

log = logging.getLogger("vigil.gateway.webhooks")

SEVERITIES = ("info", "minor", "major", "critical")
STATES = ("fired", "updated", "resolved", "acknowledged", "unacknowledged", "silenced", "unsilenced")
SUBSCRIPTIONS = "webhooks"
DELIVERIES = "webhook_deliveries"
ATTEMPTS = "webhook_attempts"


class WebhookError(ValueError):
    """A subscription or change that cannot be used; the message says why."""


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


# --- the signature ----------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Vigil-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """Whether ``signature`` (the ``X-Vigil-Signature`` header) signs ``timestamp`` (the
    ``X-Vigil-Timestamp`` header) and the raw ``body`` with ``secret``, and ``timestamp`` is
    within ``tolerance_s`` seconds of ``now`` (default: this machine's clock)."""
    if not timestamp.isdigit() or not signature.startswith("sha256="):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), signature[len("sha256="):])


# --- filters and changes ----------------------------------------------------------------


def _field(change: Mapping[str, Any], name: str) -> Any:
    """A field of the change, or of the alert snapshot it carries (the store's history rows)."""
    if change.get(name) is not None:
        return change[name]
    alert = change.get("alert")
    return alert.get(name) if isinstance(alert, Mapping) else None


def _state(change: Mapping[str, Any]) -> str | None:
    """``state`` (the processors' contract) or ``kind`` (a store history row)."""
    value = change.get("state") if change.get("state") is not None else change.get("kind")
    return value if isinstance(value, str) else None


def transition_id(change: Mapping[str, Any]) -> str:
    """What makes a change unique: its ``transition_id`` when the caller gives one, else
    ``fingerprint|started|revision|state`` (a processor's transition is identified by
    (fingerprint, started, revision); the state tells an API action apart from it)."""
    explicit = change.get("transition_id")
    if explicit is not None:
        return str(explicit)
    fingerprint, state = _field(change, "fingerprint"), _state(change)
    if not isinstance(fingerprint, str) or not fingerprint or state is None:
        raise WebhookError("an alert change needs a fingerprint and a state (or a transition_id)")
    return f"{fingerprint}|{_field(change, 'started')}|{_field(change, 'revision')}|{state}"


def _strings(values: Iterable[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise WebhookError(f"{what} must be a list of strings, not a string")
    out = tuple(values)
    if not all(isinstance(v, str) and v for v in out):
        raise WebhookError(f"{what} must be non-empty strings")
    return out


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """Which alert changes a subscription receives. Every given criterion must hold; an empty
    one matches everything. ``rules`` entries match exactly, or by prefix when they end in
    ``*`` (``geofence:*``)."""

    min_severity: str | None = None
    rules: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    device_kinds: tuple[str, ...] = ()
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise WebhookError(f"min_severity must be one of {', '.join(SEVERITIES)}, got {self.min_severity!r}")
        for name in ("rules", "devices", "device_kinds", "states"):
            object.__setattr__(self, name, _strings(getattr(self, name), name))
        unknown = set(self.states) - set(STATES)
        if unknown:
            raise WebhookError(f"unknown state(s) {', '.join(sorted(unknown))}: use {', '.join(STATES)}")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> WebhookFilter:
        doc = dict(doc or {})
        unknown = set(doc) - {"min_severity", "rules", "devices", "device_kinds", "states"}
        if unknown:
            raise WebhookError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        return cls(doc.get("min_severity"), doc.get("rules") or (), doc.get("devices") or (),
                   doc.get("device_kinds") or (), doc.get("states") or ())

    def to_json(self) -> dict[str, Any]:
        return {"min_severity": self.min_severity, "rules": list(self.rules), "devices": list(self.devices),
                "device_kinds": list(self.device_kinds), "states": list(self.states)}

    def matches(self, change: Mapping[str, Any]) -> bool:
        if self.min_severity is not None:
            severity = _field(change, "severity")
            if severity not in SEVERITIES or SEVERITIES.index(severity) < SEVERITIES.index(self.min_severity):
                return False
        if self.rules:
            rule = _field(change, "rule")
            if not isinstance(rule, str) or not any(
                    rule.startswith(r[:-1]) if r.endswith("*") else rule == r for r in self.rules):
                return False
        if self.devices and _field(change, "subject") not in self.devices:
            return False
        if self.device_kinds and _field(change, "device_kind") not in self.device_kinds:
            return False
        return not self.states or _state(change) in self.states


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    url: str
    secret: str
    filter: WebhookFilter
    enabled: bool
    created: str  # ISO 8601, UTC
    description: str = ""

    def to_json(self, *, with_secret: bool = False) -> dict[str, Any]:
        out = {"id": self.id, "url": self.url, "filter": self.filter.to_json(), "enabled": self.enabled,
               "created": self.created, "description": self.description}
        if with_secret:
            out["secret"] = self.secret
        return out


# --- retries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # "delivered", "retry" or "failed"
    delay_s: float | None = None  # for "retry"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (delta seconds or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.25  # delays are multiplied by a random number in [1, 1 + jitter)
    max_delay_s: float = 3600.0
    max_retry_after_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.factor < 1 or self.jitter < 0:
            raise WebhookError("retry policy: max_attempts >= 1, base_s >= 0, factor >= 1, jitter >= 0")

    def backoff(self, attempt: int, rnd: float) -> float:
        """The delay after failed attempt number ``attempt`` (1-based); ``rnd`` in [0, 1)."""
        return min(self.max_delay_s, self.base_s * self.factor ** (attempt - 1) * (1 + self.jitter * rnd))

    def decide(self, attempt: int, status_code: int | None, retry_after_s: float | None = None,
               rnd: float = 0.0) -> Decision:
        """After attempt ``attempt`` ended with ``status_code`` (None: a connection error or
        a timeout): delivered, failed, or retry after how long."""
        if status_code is not None and 200 <= status_code < 300:
            return Decision("delivered")
        retryable = status_code is None or status_code == 429 or status_code >= 500
        if not retryable or attempt >= self.max_attempts:
            return Decision("failed")
        if retry_after_s is not None and status_code is not None:
            return Decision("retry", min(retry_after_s, self.max_retry_after_s))
        return Decision("retry", self.backoff(attempt, rnd))


# --- storage ----------------------------------------------------------------------------


def _create_tables(db: Database) -> None:
    db.table(SUBSCRIPTIONS).create({
        "id": str, "url": str, "secret": str, "filter": str, "enabled": int, "created": str,
        "description": str}, pk="id", not_null={"url", "secret", "filter", "enabled", "created"},
        if_not_exists=True)
    db.table(DELIVERIES).create({
        "id": str, "webhook_id": str, "transition_id": str, "event": str, "body": bytes,
        "status": str, "attempts": int, "next_attempt_at": float, "created": str, "finished": str,
        "last_status_code": int, "last_error": str}, pk="id",
        not_null={"webhook_id", "transition_id", "body", "status", "attempts", "created"},
        if_not_exists=True)
    db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {DELIVERIES}_transition "
               f"ON {DELIVERIES} (webhook_id, transition_id)")
    db.execute(f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_due ON {DELIVERIES} (status, next_attempt_at)")
    db.execute(f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_webhook ON {DELIVERIES} (webhook_id, created)")
    db.execute(f"""CREATE TABLE IF NOT EXISTS {ATTEMPTS} (
        id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        at TEXT NOT NULL, status_code INTEGER, error TEXT, duration_ms REAL NOT NULL,
        outcome TEXT NOT NULL, retry_in_s REAL, response TEXT)""")
    db.execute(f"CREATE INDEX IF NOT EXISTS {ATTEMPTS}_delivery ON {ATTEMPTS} (delivery_id, attempt)")


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise WebhookError(f"url {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookError(f"url {url!r} must be http:// or https:// with a host")
    return url


def _subscription(row: Mapping[str, Any]) -> Subscription:
    return Subscription(row["id"], row["url"], row["secret"], WebhookFilter.from_json(json.loads(row["filter"])),
                        bool(row["enabled"]), row["created"], row["description"] or "")


@contextmanager
def _writing(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit what the block wrote, unless the caller has a transaction open (then it is
    the caller's to commit: ``enqueue`` may run inside the store's own transaction)."""
    if conn.in_transaction:
        yield
    else:
        with conn:
            yield


def _delivery(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["body"] = json.loads(d["body"])
    at = d.pop("next_attempt_at")
    d["next_attempt_at"] = _iso(at) if at is not None and d["status"] == "pending" else None
    return d


class Webhooks:
    """Subscriptions and their deliveries in ``db`` (the caller's ``sqlite_utils.Database``).

    ``on_enqueue`` is called (with the new delivery ids) after ``enqueue`` recorded some:
    pass a ``Dispatcher.notify`` to have them sent at once instead of at its next poll."""

    def __init__(self, db: Database, *, on_enqueue: Callable[[list[str]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.on_enqueue = on_enqueue
        self.clock = clock
        _create_tables(db)

    # subscriptions

    def create(self, url: str, *, secret: str | None = None,
               filter: WebhookFilter | Mapping[str, Any] | None = None,
               enabled: bool = True, description: str = "") -> Subscription:
        """A new subscription. Without ``secret`` one is generated: read it from the result."""
        flt = filter if isinstance(filter, WebhookFilter) else WebhookFilter.from_json(filter)
        if secret is not None and len(secret) < 16:
            raise WebhookError("a webhook secret must be at least 16 characters")
        sub = Subscription(f"wh_{secrets.token_hex(8)}", _check_url(url), secret or secrets.token_hex(32),
                           flt, enabled, _iso(self.clock()), description)
        with _writing(self.db.conn):
            self.db.table(SUBSCRIPTIONS).insert({
                "id": sub.id, "url": sub.url, "secret": sub.secret, "filter": json.dumps(flt.to_json()),
                "enabled": int(enabled), "created": sub.created, "description": description})
        log.info("webhook created id=%s url=%s", sub.id, sub.url)
        return sub

    def list(self) -> list[Subscription]:
        return [_subscription(r) for r in self.db.query(f"SELECT * FROM {SUBSCRIPTIONS} ORDER BY created, rowid")]

    def get(self, webhook_id: str) -> Subscription | None:
        rows = list(self.db.query(f"SELECT * FROM {SUBSCRIPTIONS} WHERE id = ?", [webhook_id]))
        return _subscription(rows[0]) if rows else None

    def set_enabled(self, webhook_id: str, enabled: bool) -> bool:
        with _writing(self.db.conn):
            cur = self.db.execute(f"UPDATE {SUBSCRIPTIONS} SET enabled = ? WHERE id = ?", [int(enabled), webhook_id])
        return cur.rowcount > 0

    def delete(self, webhook_id: str) -> bool:
        """Remove a subscription; its pending deliveries become ``cancelled``. False if unknown."""
        with _writing(self.db.conn):
            cur = self.db.execute(f"DELETE FROM {SUBSCRIPTIONS} WHERE id = ?", [webhook_id])
            self.db.execute(f"UPDATE {DELIVERIES} SET status = 'cancelled', finished = ? "
                            "WHERE webhook_id = ? AND status = 'pending'", [_iso(self.clock()), webhook_id])
        return cur.rowcount > 0

    # deliveries

    def enqueue(self, alert_change: Mapping[str, Any]) -> builtins.list[str]:
        """Record a pending delivery of ``alert_change`` for each enabled subscription whose
        filter matches; returns the new delivery ids (none for a transition already
        enqueued for that subscription: the call is idempotent)."""
        tid = transition_id(alert_change)
        state = _state(alert_change) or "change"
        now = self.clock()
        created = _iso(now)
        new: builtins.list[str] = []
        with _writing(self.db.conn):
            for sub in self.list():
                if not sub.enabled or not sub.filter.matches(alert_change):
                    continue
                delivery = str(uuid.uuid4())
                body = json.dumps({"id": delivery, "type": f"alert.{state}", "webhook": sub.id,
                                   "created": created, "transition": tid, "alert": alert_change},
                                  separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
                cur = self.db.execute(
                    f"INSERT OR IGNORE INTO {DELIVERIES} (id, webhook_id, transition_id, event, body, status, "
                    "attempts, next_attempt_at, created) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                    [delivery, sub.id, tid, f"alert.{state}", body.encode(), now, created])
                if cur.rowcount:
                    new.append(delivery)
        if new:
            log.debug("enqueued %d deliveries of %s", len(new), tid)
            if self.on_enqueue is not None:
                self.on_enqueue(new)
        return new

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery with its attempts (oldest first)."""
        rows = list(self.db.query(f"SELECT * FROM {DELIVERIES} WHERE id = ?", [delivery_id]))
        if not rows:
            return None
        out = _delivery(rows[0])
        out["log"] = self.attempts(delivery_id)
        return out

    def deliveries(self, webhook_id: str | None = None, status: str | None = None,
                   limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Deliveries, newest first, without their attempts."""
        where, args = [], []
        if webhook_id is not None:
            where.append("webhook_id = ?")
            args.append(webhook_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = (f"SELECT * FROM {DELIVERIES} {'WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY created DESC, rowid DESC LIMIT ?")
        return [_delivery(r) for r in self.db.query(sql, [*args, limit])]

    def attempts(self, delivery_id: str) -> builtins.list[dict[str, Any]]:
        return [dict(r) for r in self.db.query(
            f"SELECT attempt, at, status_code, error, duration_ms, outcome, retry_in_s, response "
            f"FROM {ATTEMPTS} WHERE delivery_id = ? ORDER BY attempt, id", [delivery_id])]

    def prune(self, older_than_s: float) -> int:
        """Forget finished (delivered, failed, cancelled) deliveries and their attempts that
        finished more than ``older_than_s`` seconds ago; returns how many."""
        cutoff = _iso(self.clock() - older_than_s)
        with _writing(self.db.conn):
            old = f"SELECT id FROM {DELIVERIES} WHERE status != 'pending' AND finished < ?"
            self.db.execute(f"DELETE FROM {ATTEMPTS} WHERE delivery_id IN ({old})", [cutoff])
            cur = self.db.execute(f"DELETE FROM {DELIVERIES} WHERE id IN ({old})", [cutoff])
        return cur.rowcount

    def redeliver(self, delivery_id: str) -> bool:
        """Make a failed (or cancelled) delivery pending again, due now; its log is kept."""
        with _writing(self.db.conn):
            cur = self.db.execute(
                f"UPDATE {DELIVERIES} SET status = 'pending', next_attempt_at = ?, finished = NULL "
                "WHERE id = ? AND status IN ('failed', 'cancelled') "
                f"AND webhook_id IN (SELECT id FROM {SUBSCRIPTIONS})", [self.clock(), delivery_id])
        return cur.rowcount > 0


# --- sending ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Due:
    id: str
    url: str
    secret: str
    event: str
    body: bytes
    attempt: int  # this attempt's number


@dataclass(frozen=True, slots=True)
class _Result:
    due: _Due
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after: str | None
    response: str | None


@dataclass
class Dispatcher:
    """Sends pending deliveries of the subscriptions in a SQLite file.

    ``database`` is the file's path, or the ``sqlite_utils.Database`` the ``Webhooks`` use
    (its file is opened again: SQLite connections stay in their thread). An in-memory
    database cannot be shared with this thread. A thread owns that connection and decides;
    up to ``concurrency`` requests run at once in a pool. Without ``notify()`` it looks for
    due deliveries every ``poll_s`` seconds."""

    database: Database | str | Path
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    concurrency: int = 4
    poll_s: float = 1.0
    clock: Callable[[], float] = time.time
    rng: Callable[[], float] = random.random
    transport: httpx.BaseTransport | None = None  # None: the network

    def __post_init__(self) -> None:
        self._path = self._file(self.database)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @staticmethod
    def _file(database: Database | str | Path) -> str:
        if isinstance(database, str | Path):
            return str(database)
        row = database.execute("PRAGMA database_list").fetchone()
        if not row or not row[2]:
            raise WebhookError("the dispatcher needs the database in a file (it opens its own connection)")
        return str(row[2])

    # lifecycle

    def start(self) -> Dispatcher:
        if self._thread is not None:
            raise RuntimeError("the dispatcher is already started")
        self._thread = threading.Thread(target=self._run, name="vigil-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking deliveries, wait for the requests in flight and record them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.timeout_s + 10)
            if self._thread.is_alive():
                log.warning("the webhook dispatcher did not stop within the timeout")
        if self._failure is not None:
            raise RuntimeError("the webhook dispatcher failed") from self._failure

    def __enter__(self) -> Dispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self, *_: object) -> None:
        """Look for due deliveries now (thread-safe; a ``Webhooks.on_enqueue`` target)."""
        self._wake.set()

    # the loop

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        db = Database(conn)
        pool = ThreadPoolExecutor(max(1, self.concurrency), thread_name_prefix="vigil-webhook-send")
        client = httpx.Client(timeout=self.timeout_s, follow_redirects=False, transport=self.transport,
                              headers={"User-Agent": "vigil-webhooks/1"})
        in_flight: dict[str, Future[_Result]] = {}
        try:
            _create_tables(db)
            while not self._stop.is_set():
                try:
                    self._record_done(db, in_flight)
                    next_due = self._submit_due(db, pool, client, in_flight)
                except sqlite3.OperationalError as exc:  # locked or busy for long: try again later
                    log.warning("webhook dispatcher: database error %s; retrying in %.1f s", exc, self.poll_s)
                    next_due = None
                wait = self.poll_s if next_due is None else min(self.poll_s, max(0.0, next_due - self.clock()))
                self._wake.wait(wait)
                self._wake.clear()
            pool.shutdown(wait=True)
            self._record_done(db, in_flight)
        except BaseException as exc:  # a bug or a broken database: say so on stop()
            log.exception("the webhook dispatcher stopped on an error")
            self._failure = exc
        finally:
            pool.shutdown(wait=True)
            client.close()
            conn.close()

    def _submit_due(self, db: Database, pool: ThreadPoolExecutor, client: httpx.Client,
                    in_flight: dict[str, Future[_Result]]) -> float | None:
        """Start the due deliveries there is room for; returns when the next one is due."""
        room = self.concurrency - len(in_flight)
        now = self.clock()
        rows = db.execute(
            f"SELECT d.id, d.attempts, d.event, d.body, d.next_attempt_at, w.url, w.secret "
            f"FROM {DELIVERIES} d JOIN {SUBSCRIPTIONS} w ON w.id = d.webhook_id "
            "WHERE d.status = 'pending' AND w.enabled = 1 ORDER BY d.next_attempt_at, d.created "
            "LIMIT ?", [room + len(in_flight) + 1]).fetchall()
        next_due: float | None = None
        for r in rows:
            if r["id"] in in_flight:
                continue
            if room <= 0:  # a finished request wakes the loop
                break
            if r["next_attempt_at"] > now:
                next_due = r["next_attempt_at"] if next_due is None else min(next_due, r["next_attempt_at"])
                continue
            due = _Due(r["id"], r["url"], r["secret"], r["event"], bytes(r["body"]), r["attempts"] + 1)
            fut = pool.submit(self._send, client, due)
            fut.add_done_callback(lambda _: self._wake.set())
            in_flight[due.id] = fut
            room -= 1
        return next_due

    def _send(self, client: httpx.Client, due: _Due) -> _Result:
        at = self.clock()
        timestamp = str(int(at))
        headers = {"Content-Type": "application/json", "X-Vigil-Delivery": due.id, "X-Vigil-Event": due.event,
                   "X-Vigil-Timestamp": timestamp, "X-Vigil-Signature": sign(due.secret, timestamp, due.body)}
        start = time.perf_counter()
        code: int | None = None
        error = retry_after = response = None
        try:
            r = client.post(due.url, content=due.body, headers=headers)
            code, retry_after = r.status_code, r.headers.get("retry-after")
            response = r.text[:200] or None
        except httpx.TimeoutException as exc:
            error = f"timeout after {self.timeout_s:g} s ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return _Result(due, at, code, error, (time.perf_counter() - start) * 1000, retry_after, response)

    def _record_done(self, db: Database, in_flight: dict[str, Future[_Result]]) -> None:
        for delivery_id in [d for d, f in in_flight.items() if f.done()]:
            self._record(db, in_flight.pop(delivery_id).result())

    def _record(self, db: Database, res: _Result) -> None:
        due = res.due
        decision = self.policy.decide(due.attempt, res.status_code,
                                      parse_retry_after(res.retry_after, res.at), self.rng())
        finished = None if decision.outcome == "retry" else _iso(self.clock())
        next_at = res.at + decision.delay_s if decision.delay_s is not None else None
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"INSERT INTO {ATTEMPTS} (delivery_id, attempt, at, status_code, error, duration_ms, outcome, "
                "retry_in_s, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [due.id, due.attempt, _iso(res.at), res.status_code, res.error, round(res.duration_ms, 3),
                 decision.outcome, decision.delay_s, res.response])
            conn.execute(
                f"UPDATE {DELIVERIES} SET attempts = ?, status = CASE WHEN status = 'pending' THEN ? ELSE status END, "
                "next_attempt_at = ?, finished = ?, last_status_code = ?, last_error = ? WHERE id = ?",
                [due.attempt, "pending" if decision.outcome == "retry" else decision.outcome, next_at, finished,
                 res.status_code, res.error, due.id])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        what = res.status_code if res.status_code is not None else res.error
        if decision.outcome == "retry":
            log.info("webhook delivery=%s attempt=%d got %s; retrying in %.1f s", due.id, due.attempt, what,
                     decision.delay_s)
        elif decision.outcome == "failed":
            log.warning("webhook delivery=%s failed after %d attempt(s): %s", due.id, due.attempt, what)
        else:
            log.debug("webhook delivery=%s delivered (attempt %d)", due.id, due.attempt)
