"""The alert store: the ``alerts``, ``device-state`` and ``device-status`` topics folded
into one SQLite file, which the HTTP API (``gateway.api``) reads and annotates.

Tables (created with sqlite-utils; the file is the store's whole state):

* ``alerts``: one row per fingerprint (one condition of one device), upserted: the current
  episode's state, severity, rule, subject, device kind, started, last transition,
  message, details, revision, acknowledgement, silence, resolution;
* ``history``: every change of an alert, numbered by ``id`` (INTEGER PRIMARY KEY
  AUTOINCREMENT, the change number that the SSE stream sends as its event id). Rows from
  the log (fired, updated, resolved) are unique on (fingerprint, started, revision): a
  transition written twice by a restarted processor (at-least-once) is dropped. Rows from
  the API (acknowledged, unacknowledged, silenced, unsilenced, manually resolved) carry
  the actor and comment. Each row holds a snapshot of the alert after the change, so a
  resumed stream replays exactly what a live client saw;
* ``devices``: the latest ``device-state`` and ``device-status`` of each device, merged;
* ``offsets``: the next offset of every consumed partition, written in the same
  transaction as the rows that its records produced, so a crash of the store neither
  loses nor doubles a record: on start the consumer seeks to these offsets (no group
  rebalance decides them; the group's committed offsets are written afterwards, only so
  that ``vigil`` admin tools and ``GET /cluster`` show the store's lag);
* ``silences`` and ``tokens`` (``gateway.api.auth``): operator state.

Rebuilding from offset 0 (delete the file, restart) gives the same alerts, history (with
the same change numbers when ``alerts`` has one partition) and devices. Operator state
(acknowledgements, manual resolutions, silences, API tokens) exists only in this file:
back it up with ``sqlite3 alerts.db ".backup copy.db"``.

Semantics of an alert row:

* a transition of a later episode (a greater ``started``) replaces the row: a new
  episode starts unacknowledged;
* a later revision of the same episode updates severity, message and details; a rise in
  severity of an acknowledged alert makes it fire again (history ``unacknowledged``, by
  ``vigil``): a NEWS2 score going from medium to high must page again;
* an older transition (a processor replaying from an earlier offset) goes to the history
  only;
* a manual resolve closes the episode in the store: later transitions of that episode are
  recorded but do not reopen it; the next episode fires again;
* ``status`` is ``resolved`` (``resolved_at`` set), else ``acknowledged``, else ``firing``;
* ``silence_id`` names the silence that matched the alert at its last change (the
  transition's event time, or when the silence was made): that change and its history row
  are silenced (no webhook notification). The API shows an alert as silenced while any
  active silence matches it.

Writers are the store's consumer thread and the API's request threads, one transaction
each (``BEGIN IMMEDIATE``; SQLite serialises them), so change numbers are committed in
order and a reader never sees change n+1 without change n. WAL mode with
``synchronous=NORMAL``: a power loss may lose the last transactions, but then it loses
their offsets with them and the records are consumed again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlite_utils import Database

__all__ = [
    "SEVERITIES",
    "AlertDB",
    "AlertFilter",
    "AlertNotFound",
    "AlertStateConflict",
    "ChangeNotifier",
    "LogRecord",
    "SilenceNotFound",
    "StoreConsumer",
    "StoreTopics",
    "Transition",
    "alert_id_for",
]

log = logging.getLogger("vigil.store")

SEVERITIES: tuple[str, ...] = ("info", "minor", "major", "critical")
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_STATES = ("fired", "updated", "resolved")
_KINDS = ("vehicle", "patient")
SCHEMA_VERSION = 1


def now_ms() -> int:
    return int(time.time() * 1000)


def alert_id_for(fingerprint: str) -> str:
    """The alert's id in the API: stable across rebuilds, URL-safe, opaque."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:20]


class AlertNotFound(LookupError):
    pass


class SilenceNotFound(LookupError):
    pass


class AlertStateConflict(ValueError):
    """An action that the alert's state does not allow (acknowledging a resolved alert)."""


# --- the contract of the ``alerts`` topic ----------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One record of the ``alerts`` topic."""

    fingerprint: str
    rule: str
    subject: str
    device_kind: str
    state: str
    severity: str
    ts: int
    started: int
    message: str
    details: dict[str, Any]
    revision: int

    @classmethod
    def from_json(cls, value: bytes) -> Transition:
        """Parse and check one record's value; ``ValueError`` says what is wrong."""
        try:
            d = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")

        def text(name: str) -> str:
            v = d.get(name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"{name} must be a non-empty string")
            return v

        def integer(name: str) -> int:
            v = d.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            return v

        state, severity, kind = text("state"), text("severity"), text("device_kind")
        if state not in _STATES:
            raise ValueError(f"state {state!r} is not one of {', '.join(_STATES)}")
        if severity not in _SEVERITY_RANK:
            raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        if kind not in _KINDS:
            raise ValueError(f"device_kind {kind!r} is not one of {', '.join(_KINDS)}")
        details = d.get("details") or {}
        if not isinstance(details, dict):
            raise ValueError("details must be a JSON object")
        message = d.get("message") or ""
        if not isinstance(message, str):
            raise ValueError("message must be a string")
        return cls(text("fingerprint"), text("rule"), text("subject"), kind, state, severity,
                   integer("ts"), integer("started"), message, details, integer("revision"))


@dataclass(frozen=True)
class LogRecord:
    """A consumed record, as the store needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class StoreTopics:
    alerts: str = "alerts"
    device_state: str = "device-state"
    device_status: str = "device-status"

    def all(self) -> tuple[str, str, str]:
        return (self.alerts, self.device_state, self.device_status)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a list, a bulk acknowledgement or a stream selects. Empty = all."""

    status: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    min_severity: str | None = None
    rule: tuple[str, ...] = ()  # exact names or globs (``geofence:*``)
    device: tuple[str, ...] = ()
    device_kind: tuple[str, ...] = ()
    since: int | None = None  # last_change >= since (ms)
    until: int | None = None  # last_change < until (ms)

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def one_of(column: str, values: Sequence[str]) -> None:
            exact = [v for v in values if not _is_glob(v)]
            globs = [v for v in values if _is_glob(v)]
            parts = []
            if exact:
                parts.append(f"{column} IN ({', '.join('?' * len(exact))})")
                params.extend(exact)
            for g in globs:
                parts.append(f"{column} GLOB ?")
                params.append(g)
            if parts:
                clauses.append("(" + " OR ".join(parts) + ")")

        one_of("status", self.status)
        one_of("severity", self.severity)
        one_of("rule", self.rule)
        one_of("subject", self.device)
        one_of("device_kind", self.device_kind)
        if self.min_severity is not None:  # as a list: the (severity, last_change) index serves it
            at_least = SEVERITIES[_SEVERITY_RANK[self.min_severity]:]
            clauses.append(f"severity IN ({', '.join('?' * len(at_least))})")
            params.extend(at_least)
        if self.since is not None:
            clauses.append("last_change >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("last_change < ?")
            params.append(self.until)
        return clauses, params

    def matches(self, alert: dict[str, Any]) -> bool:
        """The same selection in Python (for the live stream)."""
        def ok(values: Sequence[str], v: str) -> bool:
            return not values or any(fnmatch.fnmatchcase(v, p) if _is_glob(p) else v == p
                                     for p in values)

        return (ok(self.status, alert["status"]) and ok(self.severity, alert["severity"])
                and ok(self.rule, alert["rule"]) and ok(self.device, alert["subject"])
                and ok(self.device_kind, alert["device_kind"])
                and (self.min_severity is None
                     or _SEVERITY_RANK[alert["severity"]] >= _SEVERITY_RANK[self.min_severity])
                and (self.since is None or alert["last_change"] >= self.since)
                and (self.until is None or alert["last_change"] < self.until))


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


# --- change notification ---------------------------------------------------------------


class ChangeNotifier:
    """Tells waiters (the SSE streams, webhook delivery) that changes were committed.

    ``subscribe`` returns a callback target; writers call ``notify(last_change_id)``
    after each commit. Callbacks run on the writer's thread and must be quick (an
    ``asyncio`` stream schedules an ``Event.set`` with ``call_soon_threadsafe``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[int, Callable[[int], None]] = {}
        self._next = 0
        self.last_id = 0

    def subscribe(self, callback: Callable[[int], None]) -> int:
        with self._lock:
            self._next += 1
            self._subscribers[self._next] = callback
            return self._next

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers.pop(token, None)

    def notify(self, last_id: int) -> None:
        with self._lock:
            self.last_id = max(self.last_id, last_id)
            callbacks = list(self._subscribers.values())
        for cb in callbacks:
            try:
                cb(last_id)
            except Exception:  # a closed event loop: its stream is gone
                log.debug("change subscriber failed", exc_info=True)


# --- the database ----------------------------------------------------------------------


_ALERT_COLUMNS = (
    "id", "fingerprint", "rule", "subject", "device_kind", "status", "severity",
    "severity_rank", "started", "last_ts", "last_change", "message", "details", "revision",
    "acknowledged_by", "acknowledged_at", "ack_comment", "silence_id", "resolved_at",
    "resolved_by", "resolve_comment")


class AlertDB:
    """The SQLite file: schema, ingestion of consumed records, operator actions.

    Thread-safe: each call takes a connection from a small pool."""

    def __init__(self, path: Path | str, notifier: ChangeNotifier | None = None,
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.notifier = notifier or ChangeNotifier()
        # called inside each write transaction with the history rows it wrote (webhooks
        # enqueue their deliveries there: atomically with the change)
        self.change_hooks: list[Callable[[sqlite3.Connection, list[dict[str, Any]]], None]] = []
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        with self.connection() as conn:
            self._create_schema(Database(conn))
            row = conn.execute("SELECT max(id) FROM history").fetchone()
            self.notifier.last_id = max(self.notifier.last_id, row[0] or 0)

    # connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout_s)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("the alert database is closed")
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
            with self._pool_lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._pool.put(conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on error. The
        ``change_hooks`` see the history rows it wrote, inside it, before the commit."""
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = 0
                if self.change_hooks:
                    before = conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0]
                yield conn
                if self.change_hooks:
                    changes = [_history_row(r) for r in conn.execute(
                        "SELECT * FROM history WHERE id > ? ORDER BY id", (before,))]
                    if changes:
                        for hook in self.change_hooks:
                            hook(conn, changes)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()

    def check(self) -> bool:
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1 FROM alerts LIMIT 1").fetchall()
            return True
        except sqlite3.Error:
            log.exception("database check failed")
            return False

    @staticmethod
    def _create_schema(db: Database) -> None:
        if "alerts" in db.table_names():
            return
        db.table("meta").create({"key": str, "value": str}, pk="key")
        db.table("meta").insert({"key": "schema_version", "value": str(SCHEMA_VERSION)})
        db.table("alerts").create({
            "id": str, "fingerprint": str, "rule": str, "subject": str, "device_kind": str,
            "status": str, "severity": str, "severity_rank": int, "started": int, "last_ts": int,
            "last_change": int, "message": str, "details": str, "revision": int,
            "acknowledged_by": str, "acknowledged_at": int, "ack_comment": str,
            "silence_id": str, "resolved_at": int, "resolved_by": str, "resolve_comment": str,
        }, pk="id", not_null={"fingerprint", "rule", "subject", "device_kind", "status",
                              "severity", "started", "last_ts", "last_change", "revision"})
        a = db.table("alerts")
        a.create_index(["fingerprint"], unique=True)
        a.create_index(["last_change", "id"])
        for col in ("status", "severity", "rule", "subject", "device_kind"):
            a.create_index([col, "last_change", "id"])
        a.create_index(["silence_id"])
        db.execute("""CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
            kind TEXT NOT NULL, source TEXT NOT NULL, ts INTEGER NOT NULL, started INTEGER,
            revision INTEGER, actor TEXT, comment TEXT, alert TEXT NOT NULL)""")
        db.execute("CREATE UNIQUE INDEX history_transition ON history (fingerprint, started, revision)"
                   " WHERE source = 'log'")
        db.table("history").create_index(["alert_id", "id"])
        db.table("devices").create({
            "id": str, "kind": str, "state_ts": int, "latest": str, "news2": str,
            "news2_total": int, "news2_risk": str, "window": str, "active_alerts": str,
            "status": str, "version": str, "outbox_depth": int, "outbox_bytes": int,
            "dropped": int, "status_ts": int, "status_received": int, "last_seen": int,
        }, pk="id")
        db.table("devices").create_index(["kind", "id"])
        db.table("devices").create_index(["status", "id"])
        db.table("offsets").create({"topic": str, "partition": int, "next_offset": int},
                             pk=("topic", "partition"), not_null={"next_offset"})
        db.table("silences").create({
            "id": str, "rule": str, "device": str, "starts_at": int, "ends_at": int,
            "created_by": str, "comment": str, "created_at": int,
        }, pk="id", not_null={"rule", "device", "starts_at", "ends_at"})
        db.table("silences").create_index(["ends_at"])
        db.table("tokens").create({
            "id": str, "name": str, "secret_sha256": str, "scopes": str, "created_at": int,
            "revoked_at": int, "last_used_at": int,
        }, pk="id", not_null={"name", "secret_sha256", "scopes", "created_at"})

    # ingestion (the consumer thread)

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        with self.connection() as conn:
            return {(r["topic"], r["partition"]): r["next_offset"]
                    for r in conn.execute("SELECT * FROM offsets")}

    def ingest(self, records: Sequence[LogRecord], topics: StoreTopics = StoreTopics()) -> int:
        """Apply consumed records and their offsets in one transaction; returns the number
        of history rows written. Malformed records are logged and skipped (their offsets
        still advance: a bad record must not block the store)."""
        if not records:
            return 0
        written = 0
        last_id = 0
        with self.transaction() as conn:
            silences = _all_silences(conn)
            offsets: dict[tuple[str, int], int] = {}
            for r in records:
                offsets[(r.topic, r.partition)] = max(offsets.get((r.topic, r.partition), 0),
                                                      r.offset + 1)
                try:
                    if r.topic == topics.alerts:
                        if r.value is None:
                            continue
                        ids = _apply_transition(conn, Transition.from_json(r.value), silences)
                        written += len(ids)
                        if ids:
                            last_id = ids[-1]
                    elif r.topic == topics.device_state:
                        _apply_device_state(conn, r.key, r.value)
                    elif r.topic == topics.device_status:
                        _apply_device_status(conn, r.key, r.value)
                except (ValueError, TypeError, KeyError) as exc:
                    log.warning("skipping a malformed record topic=%s partition=%d offset=%d: %s",
                                r.topic, r.partition, r.offset, exc)
            conn.executemany(
                "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(t, p, o) for (t, p), o in offsets.items()])
        if last_id:
            self.notifier.notify(last_id)
        return written

    # operator actions (the API)

    def acknowledge(self, alert_id: str, by: str, comment: str | None, at: int | None = None) -> dict[str, Any]:
        at = at or now_ms()
        with self.transaction() as conn:
            row = _get(conn, alert_id)
            if row["status"] == "resolved":
                raise AlertStateConflict(f"alert {alert_id} is resolved; there is nothing to acknowledge")
            last = 0
            if row["status"] == "firing":
                row.update(acknowledged_by=by, acknowledged_at=at, ack_comment=comment)
                last = _save(conn, row, "acknowledged", "api", at, actor=by, comment=comment)
        if last:
            self.notifier.notify(last)
        return row

    def acknowledge_many(self, flt: AlertFilter, by: str, comment: str | None,
                         at: int | None = None) -> list[str]:
        """Acknowledge every firing alert that ``flt`` selects; returns their ids."""
        at = at or now_ms()
        clauses, params = flt.where()
        clauses.append("status = 'firing'")
        last = 0
        with self.transaction() as conn:
            rows = [_row(r) for r in conn.execute(
                f"SELECT * FROM alerts WHERE {' AND '.join(clauses)} ORDER BY last_change, id", params)]
            for row in rows:
                row.update(acknowledged_by=by, acknowledged_at=at, ack_comment=comment)
                last = _save(conn, row, "acknowledged", "api", at, actor=by, comment=comment)
        if last:
            self.notifier.notify(last)
        return [r["id"] for r in rows]

    def unacknowledge(self, alert_id: str, by: str, comment: str | None, at: int | None = None) -> dict[str, Any]:
        at = at or now_ms()
        with self.transaction() as conn:
            row = _get(conn, alert_id)
            if row["status"] == "resolved":
                raise AlertStateConflict(f"alert {alert_id} is resolved; it cannot be unacknowledged")
            last = 0
            if row["status"] == "acknowledged":
                row.update(acknowledged_by=None, acknowledged_at=None, ack_comment=None)
                last = _save(conn, row, "unacknowledged", "api", at, actor=by, comment=comment)
        if last:
            self.notifier.notify(last)
        return row

    def resolve(self, alert_id: str, by: str, comment: str | None, at: int | None = None) -> dict[str, Any]:
        at = at or now_ms()
        with self.transaction() as conn:
            row = _get(conn, alert_id)
            last = 0
            if row["status"] != "resolved":
                row.update(resolved_at=at, resolved_by=by, resolve_comment=comment)
                last = _save(conn, row, "resolved_manually", "api", at, actor=by, comment=comment)
        if last:
            self.notifier.notify(last)
        return row

    def create_silence(self, rule: str, device: str, starts_at: int, ends_at: int, by: str,
                       comment: str | None, at: int | None = None) -> dict[str, Any]:
        at = at or now_ms()
        silence = {"id": uuid.uuid4().hex[:16], "rule": rule, "device": device,
                   "starts_at": starts_at, "ends_at": ends_at, "created_by": by,
                   "comment": comment, "created_at": at}
        last = 0
        with self.transaction() as conn:
            conn.execute("INSERT INTO silences (id, rule, device, starts_at, ends_at, created_by, "
                         "comment, created_at) VALUES (:id, :rule, :device, :starts_at, :ends_at, "
                         ":created_by, :comment, :created_at)", silence)
            if starts_at <= at < ends_at:
                for row in (_row(r) for r in conn.execute(
                        "SELECT * FROM alerts WHERE status != 'resolved' AND silence_id IS NULL")):
                    if silence_matches(silence, row["rule"], row["subject"]):
                        row["silence_id"] = silence["id"]
                        last = _save(conn, row, "silenced", "api", at, actor=by, comment=comment,
                                     silenced=True)
        if last:
            self.notifier.notify(last)
        return silence

    def delete_silence(self, silence_id: str, by: str, at: int | None = None) -> None:
        at = at or now_ms()
        last = 0
        with self.transaction() as conn:
            if conn.execute("DELETE FROM silences WHERE id = ?", (silence_id,)).rowcount == 0:
                raise SilenceNotFound(f"no silence {silence_id}")
            others = [s for s in _all_silences(conn) if s["starts_at"] <= at < s["ends_at"]]
            for row in (_row(r) for r in conn.execute(
                    "SELECT * FROM alerts WHERE silence_id = ?", (silence_id,))):
                other = next((s for s in others if silence_matches(s, row["rule"], row["subject"])), None)
                row["silence_id"] = other["id"] if other else None
                if other is None and row["status"] != "resolved":
                    last = _save(conn, row, "unsilenced", "api", at, actor=by, silenced=False)
                else:
                    _save(conn, row, None, "api", at)
        if last:
            self.notifier.notify(last)

    def silences(self, include_expired: bool = False, at: int | None = None) -> list[dict[str, Any]]:
        at = at or now_ms()
        with self.connection() as conn:
            sql = "SELECT * FROM silences"
            params: tuple[Any, ...] = ()
            if not include_expired:
                sql += " WHERE ends_at > ?"
                params = (at,)
            return [dict(r) for r in conn.execute(sql + " ORDER BY starts_at, id", params)]

    # reads

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        with self.connection() as conn:
            return _get(conn, alert_id)

    def history(self, alert_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self.connection() as conn:
            return [_history_row(r) for r in conn.execute(
                "SELECT * FROM history WHERE alert_id = ? ORDER BY id DESC LIMIT ?",
                (alert_id, limit))][::-1]

    def changes_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        with self.connection() as conn:
            return [_history_row(r) for r in conn.execute(
                "SELECT * FROM history WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]

    def last_change_id(self) -> int:
        with self.connection() as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])

    def list_alerts(self, flt: AlertFilter, limit: int,
                    after: tuple[int, str] | None = None) -> list[dict[str, Any]]:
        """Newest change first; ``after`` = the (last_change, id) of the previous page's
        last alert (keyset pagination: stable while alerts arrive or change)."""
        clauses, params = flt.where()
        if after is not None:
            clauses.append("(last_change < ? OR (last_change = ? AND id < ?))")
            params.extend([after[0], after[0], after[1]])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.connection() as conn:
            return [_row(r) for r in conn.execute(
                f"SELECT * FROM alerts {where} ORDER BY last_change DESC, id DESC LIMIT ?",
                [*params, limit])]

    def active_silences(self, at: int | None = None) -> list[dict[str, Any]]:
        at = at or now_ms()
        with self.connection() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT * FROM silences WHERE starts_at <= ? AND ends_at > ? ORDER BY starts_at, id",
                (at, at))]

    def counts(self) -> dict[tuple[str, str], int]:
        with self.connection() as conn:
            return {(r[0], r[1]): r[2] for r in conn.execute(
                "SELECT status, severity, count(*) FROM alerts GROUP BY status, severity")}

    def devices(self, kind: str | None = None, status: str | None = None, limit: int = 1000,
                after: str | None = None) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if kind:
            clauses.append("kind = ?")
            params.append(kind)
        if status:
            clauses.append("status = ?")
            params.append(status)
        if after is not None:
            clauses.append("id > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.connection() as conn:
            return [dict(r) for r in conn.execute(
                f"SELECT * FROM devices {where} ORDER BY id LIMIT ?", [*params, limit])]

    def device(self, device_id: str) -> dict[str, Any] | None:
        with self.connection() as conn:
            r = conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
            return dict(r) if r else None


def silence_matches(silence: dict[str, Any], rule: str, device: str) -> bool:
    return fnmatch.fnmatchcase(rule, silence["rule"]) and fnmatch.fnmatchcase(device, silence["device"])


def _all_silences(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM silences ORDER BY starts_at, id")]


def _matching_silence(silences: Iterable[dict[str, Any]], rule: str, device: str, at: int) -> str | None:
    for s in silences:
        if s["starts_at"] <= at < s["ends_at"] and silence_matches(s, rule, device):
            return str(s["id"])
    return None


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["details"] = orjson.loads(d["details"]) if d["details"] else {}
    return d


def _get(conn: sqlite3.Connection, alert_id: str) -> dict[str, Any]:
    r = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if r is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return _row(r)


def _history_row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["alert"] = orjson.loads(d["alert"])
    return d


def _status(row: dict[str, Any]) -> str:
    if row.get("resolved_at") is not None:
        return "resolved"
    return "acknowledged" if row.get("acknowledged_at") is not None else "firing"


_UPSERT_ALERT = (
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) VALUES ({', '.join(':' + c for c in _ALERT_COLUMNS)}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _ALERT_COLUMNS[1:])}")


def _save(conn: sqlite3.Connection, row: dict[str, Any], kind: str | None, source: str, at: int,
          *, actor: str | None = None, comment: str | None = None, started: int | None = None,
          revision: int | None = None, silenced: bool | None = None) -> int:
    """Write the alert row and, if ``kind``, one history row with its snapshot; returns
    the change number (0 without history)."""
    row["status"] = _status(row)
    row["severity_rank"] = _SEVERITY_RANK[row["severity"]]
    if kind is not None and source == "api":
        row["last_change"] = max(row["last_change"], at)
    stored = {c: row.get(c) for c in _ALERT_COLUMNS}
    stored["details"] = orjson.dumps(row["details"], option=orjson.OPT_SORT_KEYS).decode()
    conn.execute(_UPSERT_ALERT, stored)
    if kind is None:
        return 0
    snapshot = dict(row)
    snapshot["silenced"] = bool(row.get("silence_id")) if silenced is None else silenced
    cur = conn.execute(
        "INSERT INTO history (alert_id, fingerprint, kind, source, ts, started, revision, actor, "
        "comment, alert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row["id"], row["fingerprint"], kind, source, at, started, revision, actor, comment,
         orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS).decode()))
    return int(cur.lastrowid or 0)


def _apply_transition(conn: sqlite3.Connection, t: Transition, silences: list[dict[str, Any]]) -> list[int]:
    """Fold one transition into the alert row; returns the change numbers written (none
    for a duplicate)."""
    r = conn.execute("SELECT * FROM alerts WHERE fingerprint = ?", (t.fingerprint,)).fetchone()
    cur = _row(r) if r else None
    # The row's (started, revision) is the newest transition applied to it: the same is a
    # duplicate; an older one is a duplicate if the history has it.
    if cur is not None and (t.started, t.revision) <= (cur["started"], cur["revision"]):
        if (t.started, t.revision) == (cur["started"], cur["revision"]) or conn.execute(
                "SELECT 1 FROM history WHERE source = 'log' AND fingerprint = ? AND started = ? "
                "AND revision = ?", (t.fingerprint, t.started, t.revision)).fetchone():
            return []
        # an older transition (replayed by a processor): history only
        return [_save(conn, cur, t.state, "log", t.ts, started=t.started, revision=t.revision)]
    ids: list[int] = []
    if cur is None or t.started > cur["started"]:
        row: dict[str, Any] = {
            "id": alert_id_for(t.fingerprint), "fingerprint": t.fingerprint,
            "acknowledged_by": None, "acknowledged_at": None, "ack_comment": None,
            "resolved_at": None, "resolved_by": None, "resolve_comment": None,
            "last_change": t.ts,
        }
    else:
        row = cur
        escalated = _SEVERITY_RANK[t.severity] > _SEVERITY_RANK[cur["severity"]]
        if escalated and cur["status"] == "acknowledged":
            comment = f"severity rose from {cur['severity']} to {t.severity}"
            row.update(acknowledged_by=None, acknowledged_at=None, ack_comment=None,
                       severity=t.severity)
            ids.append(_save(conn, row, "unacknowledged", "escalation", t.ts, actor="vigil",
                             comment=comment))
    row.update(rule=t.rule, subject=t.subject, device_kind=t.device_kind, severity=t.severity,
               started=t.started, last_ts=t.ts, message=t.message, details=t.details,
               revision=t.revision, last_change=max(row["last_change"], t.ts))
    if t.state == "resolved" and row.get("resolved_at") is None:
        row["resolved_at"] = t.ts
    if row.get("resolved_at") is None:
        row["silence_id"] = _matching_silence(silences, t.rule, t.subject, t.ts)
    ids.append(_save(conn, row, t.state, "log", t.ts, started=t.started, revision=t.revision))
    return ids


def _loads(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    d = orjson.loads(value)
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    return d


def _device_id(key: bytes | None, d: dict[str, Any] | None) -> str:
    if key:
        return key.decode()
    if d and isinstance(d.get("device"), str):
        return str(d["device"])
    raise ValueError("a device record without a key or a device field")


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _upsert_device(conn: sqlite3.Connection, device: str, fields: dict[str, Any]) -> None:
    cols = ["id", *fields]
    updates = ", ".join(f"{c} = excluded.{c}" for c in fields)
    conn.execute(f"INSERT INTO devices ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                 f"ON CONFLICT (id) DO UPDATE SET {updates}", [device, *fields.values()])
    conn.execute("UPDATE devices SET last_seen = max(coalesce(state_ts, 0), coalesce(status_received, 0)) "
                 "WHERE id = ?", (device,))


def _dumps(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def _apply_device_state(conn: sqlite3.Connection, key: bytes | None, value: bytes | None) -> None:
    d = _loads(value)
    device = _device_id(key, d)
    if d is None:  # a tombstone: the processors forgot the device
        _upsert_device(conn, device, {"state_ts": None, "latest": None, "news2": None,
                                      "news2_total": None, "news2_risk": None, "window": None,
                                      "active_alerts": None})
        return
    news2 = d.get("news2") if isinstance(d.get("news2"), dict) else None
    kind = d.get("kind") if d.get("kind") in _KINDS else None
    raw_alerts = d.get("alerts")
    alerts = raw_alerts if isinstance(raw_alerts, list) else []
    _upsert_device(conn, device, {
        "kind": kind, "state_ts": _int_or_none(d.get("ts")),
        "latest": _dumps(d.get("latest") if isinstance(d.get("latest"), dict) else None),
        "news2": _dumps(news2),
        "news2_total": _int_or_none(news2.get("total")) if news2 else None,
        "news2_risk": news2.get("risk") if news2 else None,
        "window": _dumps(d.get("window") if isinstance(d.get("window"), dict) else None),
        "active_alerts": _dumps([a for a in alerts if isinstance(a, str)]),
    })


def _apply_device_status(conn: sqlite3.Connection, key: bytes | None, value: bytes | None) -> None:
    d = _loads(value)
    device = _device_id(key, d)
    if d is None:
        _upsert_device(conn, device, {"status": None, "version": None, "outbox_depth": None,
                                      "outbox_bytes": None, "dropped": None, "status_ts": None,
                                      "status_received": None})
        return
    state = d.get("state") if d.get("state") in ("online", "offline") else None
    version = d.get("version")
    _upsert_device(conn, device, {
        "status": state, "version": version if isinstance(version, str) else None,
        "outbox_depth": _int_or_none(d.get("outbox_depth")),
        "outbox_bytes": _int_or_none(d.get("outbox_bytes")),
        "dropped": _int_or_none(d.get("dropped")),
        "status_ts": _int_or_none(d.get("ts")),
        "status_received": _int_or_none(d.get("received")),
    })


# --- the consumer thread ---------------------------------------------------------------


@dataclass
class StoreStatus:
    """What ``/healthz`` and ``/metrics`` report about the consumer."""

    running: bool = False
    assigned: list[tuple[str, int]] = field(default_factory=list)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0
    malformed: int = 0
    last_batch_at: float | None = None
    last_error: str | None = None

    @property
    def total_lag(self) -> int | None:
        return sum(self.lag.values()) if self.lag else (0 if self.assigned else None)


class StoreConsumer:
    """A thread consuming the three topics (every partition: the SQLite file is local,
    so each store reads everything; ``group`` only names it for lag reporting) into an
    ``AlertDB``, one transaction per batch."""

    def __init__(self, db: AlertDB, bootstrap: str, group: str = "vigil-alert-store",
                 topics: StoreTopics = StoreTopics(), batch: int = 500,
                 discover_every: float = 2.0, client_config: Mapping[str, Any] | None = None) -> None:
        self.db = db
        self.bootstrap = bootstrap
        self.client_config = dict(client_config or {})  # TLS, SASL, ... (gateway.kafka_config)
        self.group = group
        self.topics = topics
        self.batch = batch
        self.discover_every = discover_every
        self.status = StoreStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StoreConsumer:
        self._thread = threading.Thread(target=self.run, name="vigil-store", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "socket.connection.setup.timeout.ms": 3000,
            "topic.metadata.refresh.interval.ms": 5000, "fetch.wait.max.ms": 100,
            **self.client_config,
        })
        self.status.running = True
        assigned: set[tuple[str, int]] = set()
        next_discovery = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_discovery:
                    next_discovery = time.monotonic() + self.discover_every
                    new = self._discover(consumer) - assigned
                    if new:
                        stored = self.db.stored_offsets()
                        consumer.incremental_assign([
                            TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in sorted(new)])
                        assigned |= new
                        self.status.assigned = sorted(assigned)
                        log.info("store assigned partitions=%s", sorted(new))
                    self._update_lag(consumer, assigned)
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                # wait for one record, then take what else is already here: low latency
                # when quiet, big transactions under load
                msgs = consumer.consume(1, 0.2)
                if msgs:
                    msgs += consumer.consume(self.batch - 1, 0)
                records: list[LogRecord] = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if not err.retriable() and err.fatal():
                            log.error("store consumer error: %s", err)
                        self.status.last_error = str(err)
                        continue
                    records.append(LogRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
                if records:
                    self._ingest(records)
                    self.status.records += len(records)
                    self.status.last_batch_at = time.time()
                    self._commit_to_group(consumer, records)
        except Exception as exc:
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("the alert store stopped")
            raise
        finally:
            self.status.running = False
            consumer.close()

    def _ingest(self, records: list[LogRecord]) -> None:
        """Write a batch, retrying the same batch while the database refuses it (locked,
        disk full): its offsets are not stored, so nothing is skipped meanwhile."""
        delay = 0.5
        while True:
            try:
                self.db.ingest(records, self.topics)
                self.status.last_error = None
                return
            except sqlite3.Error as exc:
                self.status.last_error = f"database: {exc}"
                log.error("the store could not write %d records (%s); retrying in %.1f s",
                          len(records), exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def _discover(self, consumer: Any) -> set[tuple[str, int]]:
        try:
            md = consumer.list_topics(timeout=3)
        except Exception as exc:
            self.status.last_error = f"metadata: {exc}"
            return set()
        out: set[tuple[str, int]] = set()
        for name in self.topics.all():
            t = md.topics.get(name)
            if t is None or t.error is not None:
                continue
            out |= {(name, p) for p in t.partitions}
        return out

    def _update_lag(self, consumer: Any, assigned: set[tuple[str, int]]) -> None:
        from confluent_kafka import TopicPartition

        stored = self.db.stored_offsets()
        lag: dict[tuple[str, int], int] = {}
        for t, p in assigned:
            try:  # the high watermark of the last fetch response: no request, no wait
                _low, high = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except Exception:
                continue
            if high >= 0:
                lag[(t, p)] = max(0, high - stored.get((t, p), 0))
        self.status.lag = lag

    @staticmethod
    def _commit_to_group(consumer: Any, records: list[LogRecord]) -> None:
        from confluent_kafka import TopicPartition

        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = r.offset + 1
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()],
                            asynchronous=True)
        except Exception as exc:  # informative only: the SQLite offsets are the truth
            log.debug("group commit failed: %s", exc)
