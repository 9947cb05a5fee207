"""The device's outbox: every event is in SQLite, with its seq, before it can be sent, and
leaves only when the gateway's ack covers its seq.

Durability. The database runs in WAL mode with ``synchronous=FULL``: every commit is
fsynced before ``append`` returns. NORMAL would be faster (WAL is fsynced only at
checkpoints) and survives a crash of the agent, but on power loss it may roll back the
last commits — and those events may already have been published. After the reboot their
seqs would be handed out again to *different* readings, which the gateway and every
consumer then drop as duplicates of (device, seq): silent loss, the one thing the outbox
exists to prevent. FULL costs one fsync per commit; the agent commits once per poll tick
(all readings of the tick in one transaction), not once per reading, so the cost is a few
fsyncs a second, well within an SD card's budget. Acks (deletes) ride the same setting.

Seq. ``next_seq`` lives in the ``meta`` table and is read and advanced in the same
transaction that inserts the events: a seq is allocated if and only if its event is
stored, strictly increasing across restarts and power loss, never reused — even when the
outbox is empty or events were dropped.

Bounds and the drop policy. The outbox holds at most ``max_bytes`` of events (the size of
each event's encoded form) and nothing older than ``max_age_s`` (by the time it was
stored). When an append would exceed ``max_bytes``, the *oldest* events are dropped until
it fits: on a long outage the newest readings are the most useful, and the gateway sees
the gap in seq. Every dropped event is counted in persisted counters (``dropped_full``,
``dropped_age``) that the agent reports in its retained status — never silently. An
event that alone could never fit one MQTT message is refused at append, logged and
counted (``dropped_oversize``).

Order and fresh readings. There is one FIFO per device, in seq order, because the
contract promises per-device order (same key, same partition). Fresh readings therefore
queue behind the backlog after an outage; they are not starved because the publisher
sends in large batches (hundreds of events per MQTT message, several messages in flight),
so the drain runs at thousands of events per second while a device produces a few per
second, and latency recovers within seconds of the link returning. What could starve
fresh readings — a full outbox — drops the *oldest* ones, never the fresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import wire
from edge.sensors.base import Reading

__all__ = ["Outbox", "OutboxStats", "StoredEvent"]

log = logging.getLogger("vigil.edge")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,   -- per device, strictly increasing
    ts INTEGER NOT NULL,       -- event time, ms since the epoch
    kind TEXT NOT NULL,
    data TEXT NOT NULL,        -- the reading, compact JSON
    size INTEGER NOT NULL,     -- bytes this event adds to an MQTT payload
    stored REAL NOT NULL       -- wall-clock seconds when appended (for max_age_s)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COUNTERS = ("next_seq", "acked", "dropped_full", "dropped_age", "dropped_oversize")
# JSON overhead of one event inside the events list besides its data: {"seq":..,"ts":..}
_EVENT_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    ts: int
    kind: str
    data: dict[str, Any]
    size: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # events waiting for an ack
    bytes: int
    next_seq: int
    acked: int  # highest seq the gateway acknowledged
    dropped_full: int
    dropped_age: int
    dropped_oversize: int
    oldest_ts: int | None  # event time of the oldest waiting event

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_age + self.dropped_oversize


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Outbox:
    """Thread-safe (one lock around one connection): the agent appends, the publisher
    reads batches and applies acks from its network thread."""

    def __init__(self, path: str | Path, device: str, *, max_bytes: int = 64 * 1024 * 1024,
                 max_age_s: float = 7 * 24 * 3600.0, clock: Callable[[], float] = time.time,
                 synchronous: str = "FULL") -> None:
        self.device = wire.check_device_id(device)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_drop_log = -1e9
        # the envelope around the events list, and what fits in one MQTT message
        self._envelope = len(wire.encode_events(device, []))
        self.max_event_bytes = wire.MAX_EVENTS_PAYLOAD - self._envelope
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        with self._tx():
            for key in _COUNTERS:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, 1 if key == "next_seq" else 0))
            # a seq at or below a stored one must never be handed out again
            top = self._db.execute("SELECT max(seq) FROM events").fetchone()[0]
            if top is not None:
                self._db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (top + 1,))
        self._reload()

    # -- transactions ----------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._reload)

    def _reload(self) -> None:
        """After a rollback: the in-memory counters follow the database again."""
        self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self._depth, self._bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM events").fetchone()

    def _set(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        self._meta[key] = value

    # -- the agent's side ------------------------------------------------------------------

    def append(self, readings: Iterable[Reading]) -> list[wire.Event]:
        """Store readings as events with the next seqs, durably, in one transaction; returns
        the stored events. The oldest events are dropped (and counted) to stay in max_bytes."""
        rows: list[tuple[int, int, str, str, int, float]] = []
        events: list[wire.Event] = []
        now = self._clock()
        with self._lock:
            seq = self._meta["next_seq"]
            oversize = 0
            for r in readings:
                data = _dumps(r.data)
                size = len(data.encode()) + len(r.kind) + _EVENT_OVERHEAD
                if size > self.max_event_bytes:
                    oversize += 1
                    log.error("%s: a %s reading of %d bytes can never fit one MQTT message; dropped",
                              self.device, r.kind, size)
                    continue
                rows.append((seq, r.ts, r.kind, data, size, now))
                events.append(wire.Event(self.device, seq, r.ts, r.kind, r.data))
                seq += 1
            if not rows and not oversize:
                return []
            added = sum(row[4] for row in rows)
            with self._tx():
                self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._set("next_seq", seq)
                if oversize:
                    self._set("dropped_oversize", self._meta["dropped_oversize"] + oversize)
                self._depth += len(rows)
                self._bytes += added
                if self._bytes > self.max_bytes:
                    self._drop_oldest_locked()
            return events

    def _drop_oldest_locked(self) -> None:
        excess = self._bytes - self.max_bytes
        n = freed = 0
        for (size,) in self._db.execute("SELECT size FROM events ORDER BY seq"):
            if freed >= excess:
                break
            n += 1
            freed += size
        last = self._db.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?",
                                (n - 1,)).fetchone()[0]
        self._db.execute("DELETE FROM events WHERE seq <= ?", (last,))
        self._set("dropped_full", self._meta["dropped_full"] + n)
        self._depth -= n
        self._bytes -= freed
        now = time.monotonic()
        if now - self._last_drop_log >= 30.0:  # one line per 30 s, not one per append
            self._last_drop_log = now
            log.warning("%s: outbox full (%d bytes max): dropping the oldest events (now up to "
                        "seq %d; %d dropped in all, see the status)", self.device, self.max_bytes,
                        last, self._meta["dropped_full"])

    def expire(self) -> int:
        """Drop (and count) events stored more than max_age_s ago; returns how many."""
        cutoff = self._clock() - self.max_age_s
        with self._lock:
            oldest = self._db.execute("SELECT stored FROM events ORDER BY seq LIMIT 1").fetchone()
            if oldest is None or oldest[0] >= cutoff:  # the common case: no scan
                return 0
        with self._lock, self._tx():
            n, freed = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM events WHERE stored < ?", (cutoff,)).fetchone()
            if n:
                self._db.execute("DELETE FROM events WHERE stored < ?", (cutoff,))
                self._set("dropped_age", self._meta["dropped_age"] + n)
                self._depth -= n
                self._bytes -= freed
                log.warning("%s: dropped %d events older than %.0f s", self.device, n, self.max_age_s)
            return int(n)

    # -- the publisher's side --------------------------------------------------------------

    def next_batch(self, max_events: int, max_bytes: int = wire.MAX_EVENTS_PAYLOAD,
                   after_seq: int = 0) -> list[wire.Event]:
        """The oldest waiting events with seq > after_seq, in seq order: at most max_events,
        and few enough that ``wire.encode_events`` of them stays within max_bytes."""
        budget = max_bytes - self._envelope
        out: list[wire.Event] = []
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, ts, kind, data, size FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, max_events))
            for seq, ts, kind, data, size in cur:
                budget -= size + 1
                if budget < 0 and out:
                    break
                out.append(wire.Event(self.device, seq, ts, kind, json.loads(data)))
            cur.close()
        return out

    def ack(self, seq: int) -> int:
        """The gateway has every event with seq <= ``seq``: forget them. Out-of-order,
        repeated and stale acks change nothing; an ack beyond any seq handed out is
        ignored (and logged): it confirms nothing this outbox sent. Returns events removed."""
        with self._lock:
            top = self._meta["next_seq"] - 1
            if seq > top:  # not about anything this outbox sent: it confirms nothing
                log.warning("%s: ignoring an ack for seq %d: the highest seq handed out is %d",
                            self.device, seq, top)
                return 0
            if seq <= self._meta["acked"]:
                return 0
            with self._tx():
                n, freed = self._db.execute(
                    "SELECT count(*), coalesce(sum(size), 0) FROM events WHERE seq <= ?", (seq,)).fetchone()
                self._db.execute("DELETE FROM events WHERE seq <= ?", (seq,))
                self._set("acked", seq)
                self._depth -= n
                self._bytes -= freed
            return int(n)

    @property
    def acked(self) -> int:
        return int(self._meta["acked"])

    def stats(self) -> OutboxStats:
        with self._lock:
            row = self._db.execute("SELECT ts FROM events ORDER BY seq LIMIT 1").fetchone()
            m = self._meta
            return OutboxStats(self._depth, self._bytes, m["next_seq"], m["acked"], m["dropped_full"],
                               m["dropped_age"], m["dropped_oversize"], row[0] if row else None)

    def seqs(self) -> Sequence[int]:
        """Every waiting seq (for tests and diagnostics)."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT seq FROM events ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection, on_rollback: Callable[[], None]) -> None:
        self.db = db
        self.on_rollback = on_rollback

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
            return
        self.db.execute("ROLLBACK")
        self.on_rollback()
