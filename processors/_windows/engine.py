"""The window engine for one partition: events in, window results out. No I/O.

Time has two sources. Event time is the ``ts`` each event carries; it drives the
watermark. Wall-clock time comes only through `WindowEngine.advance`, which the shell
calls on every poll (a test calls it with a driven clock); it lets an idle partition's
watermark move on, so windows close when devices go silent.

- Watermark: ``max(event time seen) - max_out_of_order_ms``; it never goes back.
- A window ``[start, end)`` closes when ``watermark >= end + grace_ms``; it then emits
  its final result and its state is dropped.
- An event whose window is already closed is LATE: it goes out in ``Output.late`` as one
  `LateEvent` per query it missed, and `late_count` counts those; it still counts in
  that query's windows that are open (an event may miss some of its hopping windows).
- Idle: if no event arrived for ``idle_timeout_ms`` of wall-clock time (as seen by
  `advance`), the watermark becomes ``max(watermark, now - max_out_of_order_ms)``.
- Dedup: an event whose ``(key, seq)`` the engine still retains is ignored and counted
  in `duplicate_count`. Seqs are retained while any window they could fall in is open;
  a copy arriving after that finds its windows closed and comes out as late instead,
  so a resent event never counts twice.
"""

from __future__ import annotations

import enum
import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .aggregations import Aggregation
from .kinds import Hopping, Session, Tumbling, WindowKind

_NO_TIME = -(2**62)
_SNAPSHOT_FORMAT = 1


class Emit(enum.Enum):
    """FINAL: one result per window, when it closes. UPDATE: a result (``final=False``)
    on every change, then the final one (``final=True``) when it closes. When an event
    merges session windows, the update for the merged session supersedes the updates of
    the sessions it absorbed (same key and query, overlapping bounds); no retraction is
    emitted for them."""

    FINAL = "final"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class Query:
    """Aggregations (by result name) over one window kind, with one emission mode."""

    name: str
    window: WindowKind
    aggregations: Mapping[str, Aggregation]
    emit: Emit = Emit.FINAL


@dataclass(frozen=True, slots=True)
class WindowResult:
    query: str
    key: str
    start: int
    end: int
    values: Mapping[str, Any]
    final: bool


@dataclass(frozen=True, slots=True)
class LateEvent:
    """An event that arrived after a window it belongs to had closed."""

    query: str
    key: str
    seq: int
    ts: int
    event: Mapping[str, Any]
    watermark: int


@dataclass(frozen=True, slots=True)
class Output:
    results: tuple[WindowResult, ...] = ()
    late: tuple[LateEvent, ...] = ()


_EMPTY = Output()


@dataclass(frozen=True, slots=True)
class _Plan:
    index: int
    query: Query
    kind: WindowKind
    names: tuple[str, ...]
    steps: tuple[tuple[int, str | None, Any, bool], ...]  # (index, field, add, timed)
    inits: tuple[Any, ...]
    results: tuple[Any, ...]
    merges: tuple[Any, ...]
    update: bool
    session: bool = field(default=False)
    tumbling_size: int = field(default=0)  # the fast path's window size; 0: not tumbling


def _plan(index: int, query: Query) -> _Plan:
    aggs = list(query.aggregations.items())
    session = isinstance(query.window, Session)
    if session:
        unmergeable = [name for name, agg in aggs if agg.reducer.merge is None]
        if unmergeable:
            raise ValueError(
                f"query {query.name!r}: session windows merge, so every aggregation needs "
                f"a merge function; {', '.join(unmergeable)} has none"
            )
    return _Plan(
        index=index,
        query=query,
        kind=query.window,
        names=tuple(name for name, _ in aggs),
        steps=tuple(
            (i, agg.field, agg.reducer.add, agg.reducer.timed) for i, (_, agg) in enumerate(aggs)
        ),
        inits=tuple(agg.reducer.init for _, agg in aggs),
        results=tuple(agg.reducer.result for _, agg in aggs),
        merges=tuple(agg.reducer.merge for _, agg in aggs),
        update=query.emit is Emit.UPDATE,
        session=session,
        tumbling_size=query.window.size_ms if isinstance(query.window, Tumbling) else 0,
    )


def _describe(query: Query) -> list[Any]:
    kind = query.window
    if isinstance(kind, Tumbling):
        window: list[Any] = ["tumbling", kind.size_ms]
    elif isinstance(kind, Hopping):
        window = ["hopping", kind.size_ms, kind.step_ms]
    else:
        window = ["session", kind.gap_ms]
    return [query.name, window, list(query.aggregations), query.emit.value]


class WindowEngine:
    """Windowed aggregations for the events of one partition, keyed by device."""

    def __init__(
        self,
        queries: Sequence[Query],
        *,
        max_out_of_order_ms: int = 0,
        grace_ms: int = 0,
        idle_timeout_ms: int | None = None,
    ) -> None:
        names = [q.name for q in queries]
        if len(set(names)) != len(names):
            raise ValueError(f"query names must be unique: {names}")
        if max_out_of_order_ms < 0 or grace_ms < 0:
            raise ValueError("max_out_of_order_ms and grace_ms must not be negative")
        if idle_timeout_ms is not None and idle_timeout_ms <= 0:
            raise ValueError("idle_timeout_ms must be positive")
        self._plans = tuple(_plan(i, q) for i, q in enumerate(queries))
        self._bound = max_out_of_order_ms
        self._grace = grace_ms
        self._idle = idle_timeout_ms
        self._fixed_horizon = max(
            (p.kind.retention_ms for p in self._plans if not p.session), default=0
        )
        self._session_plans = tuple(p.index for p in self._plans if p.session)
        self._session_horizon = max(
            (p.kind.retention_ms for p in self._plans if p.session), default=0
        )
        # Forgetting seqs walks every key, so it runs once per half horizon, not per close.
        self._forget_every = max(1, max(self._fixed_horizon, self._session_horizon) // 2)
        self._next_forget = _NO_TIME
        self._watermark = _NO_TIME
        self._max_ts = _NO_TIME
        self._last_activity: int | None = None
        self._active = False
        self._late = 0
        self._duplicates = 0
        # (query index, key, start) -> accumulators, for tumbling and hopping windows
        self._fixed: dict[tuple[int, str, int], list[Any]] = {}
        # (query index, key) -> open sessions [start, end, accumulators], by start
        self._sessions: dict[tuple[int, str], list[list[Any]]] = {}
        # window end -> windows (query index, key, start) ending there; a heap of ends.
        # Session entries go stale when a session grows; closing skips those.
        self._expiry: dict[int, list[tuple[int, str, int]]] = {}
        self._ends: list[int] = []
        # key -> seq -> event time, for dedup
        self._seen: dict[str, dict[int, int]] = {}

    # -- what the shell and the rules read ---------------------------------------

    @property
    def watermark(self) -> int | None:
        return None if self._watermark == _NO_TIME else self._watermark

    @property
    def late_count(self) -> int:
        return self._late

    @property
    def duplicate_count(self) -> int:
        return self._duplicates

    @property
    def open_windows(self) -> int:
        return len(self._fixed) + sum(len(s) for s in self._sessions.values())

    # -- input ---------------------------------------------------------------------

    def process(self, key: str, seq: int, ts: int, event: Mapping[str, Any]) -> Output:
        """Take one event (``ts`` in ms of event time; ``event`` maps field names to
        values). Returns the results it caused and, if it was late, the side output."""
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = {seq: ts}
        elif seq in seen:
            self._duplicates += 1
            return _EMPTY
        else:
            seen[seq] = ts
        self._active = True
        limit = self._watermark - self._grace  # a window ending at or before is closed
        results: list[WindowResult] = []
        late: list[LateEvent] | None = None
        fixed = self._fixed
        for plan in self._plans:
            size = plan.tumbling_size
            if size:  # the common case, without the general loop over windows
                start = ts - ts % size
                missed = start + size <= limit
                if not missed:
                    wkey = (plan.index, key, start)
                    accs = fixed.get(wkey)
                    if accs is None:
                        accs = fixed[wkey] = [init() for init in plan.inits]
                        self._expire_at(start + size, wkey)
                    for i, name, add, timed in plan.steps:
                        if name is None:
                            value: Any = event
                        else:
                            value = event.get(name)
                            if value is None:
                                continue
                        accs[i] = add(accs[i], value, ts) if timed else add(accs[i], value)
                    if plan.update:
                        results.append(self._result(plan, key, start, start + size, accs, False))
            elif plan.session:
                missed = self._add_to_session(plan, key, ts, event, limit, results)
            else:
                missed = False
                for start, end in plan.kind.windows(ts):  # type: ignore[union-attr]
                    if end <= limit:
                        missed = True
                        continue
                    wkey = (plan.index, key, start)
                    accs = fixed.get(wkey)
                    if accs is None:
                        accs = fixed[wkey] = [init() for init in plan.inits]
                        self._expire_at(end, wkey)
                    self._fold(plan, accs, ts, event)
                    if plan.update:
                        results.append(self._result(plan, key, start, end, accs, False))
            if missed:
                self._late += 1
                if late is None:
                    late = []
                late.append(LateEvent(plan.query.name, key, seq, ts, event, self._watermark))
        if ts > self._max_ts:
            self._max_ts = ts
            if ts - self._bound > self._watermark:
                self._watermark = ts - self._bound
                if self._ends and self._ends[0] <= self._watermark - self._grace:
                    self._close_due(results)
        if not results and late is None:
            return _EMPTY
        return Output(tuple(results), tuple(late) if late else ())

    @staticmethod
    def _fold(plan: _Plan, accs: list[Any], ts: int, event: Mapping[str, Any]) -> None:
        for i, name, add, timed in plan.steps:
            if name is None:
                value: Any = event
            else:
                value = event.get(name)
                if value is None:
                    continue
            accs[i] = add(accs[i], value, ts) if timed else add(accs[i], value)

    def advance(self, now_ms: int) -> Output:
        """Wall-clock tick. If the partition has been idle for ``idle_timeout_ms``, the
        watermark follows the wall clock (less the out-of-orderness bound); returns the
        windows that this closed."""
        if self._active or self._last_activity is None:
            # The first tick starts the idle timer; a tick after events restarts it.
            self._last_activity = now_ms
            self._active = False
        elif self._idle is not None and now_ms - self._last_activity >= self._idle:
            self._watermark = max(self._watermark, now_ms - self._bound)
        results: list[WindowResult] = []
        if self._ends and self._ends[0] <= self._watermark - self._grace:
            self._close_due(results)
        return Output(tuple(results)) if results else _EMPTY

    # -- windows ---------------------------------------------------------------------

    def _expire_at(self, end: int, window: tuple[int, str, int]) -> None:
        due = self._expiry.get(end)
        if due is None:
            self._expiry[end] = [window]
            heapq.heappush(self._ends, end)
        else:
            due.append(window)

    def _add_to_session(
        self,
        plan: _Plan,
        key: str,
        ts: int,
        event: Mapping[str, Any],
        limit: int,
        results: list[WindowResult],
    ) -> bool:
        """Put the event in its session, merging the sessions it bridges; True if late."""
        gap = plan.kind.retention_ms
        start, end = ts, ts + gap
        skey = (plan.index, key)
        sessions = self._sessions.get(skey)
        if sessions is None:
            sessions = []
        touching = [s for s in sessions if s[0] < end and start < s[1]]
        if not touching and end <= limit:
            return True
        if touching:
            accs = touching[0][2]
            for other in touching[1:]:
                accs = [m(a, b) for m, a, b in zip(plan.merges, accs, other[2], strict=True)]
            start = min(start, touching[0][0])
            new_end = max(end, max(s[1] for s in touching))
            sessions = [s for s in sessions if not any(s is t for t in touching)]
        else:
            accs = [init() for init in plan.inits]
            new_end = end
        for i, name, add, timed in plan.steps:
            if name is None:
                value: Any = event
            else:
                value = event.get(name)
                if value is None:
                    continue
            accs[i] = add(accs[i], value, ts) if timed else add(accs[i], value)
        session = [start, new_end, accs]
        sessions.append(session)
        sessions.sort(key=lambda s: s[0])
        self._sessions[skey] = sessions
        if not any(s[0] == start and s[1] == new_end for s in touching):
            self._expire_at(new_end, (plan.index, key, start))
        if plan.update:
            results.append(self._result(plan, key, start, new_end, accs, False))
        return False

    def _close_due(self, results: list[WindowResult]) -> None:
        limit = self._watermark - self._grace
        ends = self._ends
        while ends and ends[0] <= limit:
            end = heapq.heappop(ends)
            for index, key, start in self._expiry.pop(end):
                plan = self._plans[index]
                if plan.session:
                    skey = (index, key)
                    sessions = self._sessions.get(skey, [])
                    for s in sessions:
                        if s[0] == start and s[1] == end:
                            sessions.remove(s)
                            if not sessions:
                                del self._sessions[skey]
                            results.append(self._result(plan, key, start, end, s[2], True))
                            break
                else:
                    accs = self._fixed.pop((index, key, start))
                    results.append(self._result(plan, key, start, end, accs, True))
        if limit >= self._next_forget:
            self._next_forget = limit + self._forget_every
            self._forget_seqs()

    def _result(
        self, plan: _Plan, key: str, start: int, end: int, accs: list[Any], final: bool
    ) -> WindowResult:
        values = {
            name: result(acc)
            for name, result, acc in zip(plan.names, plan.results, accs, strict=True)
        }
        return WindowResult(plan.query.name, key, start, end, values, final)

    def _forget_seqs(self) -> None:
        """Drop the seqs of events whose windows have all closed."""
        closed_before = self._watermark - self._grace
        fixed_cutoff = closed_before - self._fixed_horizon
        session_cutoff = closed_before - self._session_horizon
        for key in list(self._seen):
            cutoff = fixed_cutoff
            if self._session_plans:
                cutoff = min(cutoff, session_cutoff)
                for index in self._session_plans:
                    sessions = self._sessions.get((index, key))
                    if sessions:
                        cutoff = min(cutoff, sessions[0][0])
            seqs = self._seen[key]
            if min(seqs.values()) >= cutoff:
                continue
            kept = {seq: ts for seq, ts in seqs.items() if ts >= cutoff}
            if not kept:
                del self._seen[key]
            elif len(kept) != len(seqs):
                self._seen[key] = kept

    # -- checkpoints ---------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state of this partition's engine, as JSON bytes. Store it with the
        input offset of the next event to read; `restore` it into an engine built with
        the same queries."""
        state = {
            "format": _SNAPSHOT_FORMAT,
            "queries": [_describe(p.query) for p in self._plans],
            "watermark": self._watermark,
            "max_ts": self._max_ts,
            "last_activity": self._last_activity,
            "active": self._active,
            "late": self._late,
            "duplicates": self._duplicates,
            "next_forget": self._next_forget,
            "fixed": [[i, k, s, accs] for (i, k, s), accs in self._fixed.items()],
            "sessions": [[i, k, sessions] for (i, k), sessions in self._sessions.items()],
            "expiry": [[end, [list(w) for w in ws]] for end, ws in self._expiry.items()],
            "seen": {k: [[seq, ts] for seq, ts in seqs.items()] for k, seqs in self._seen.items()},
        }
        return json.dumps(state, separators=(",", ":")).encode()

    def restore(self, snapshot: bytes) -> None:
        """Replace this engine's state with a snapshot's."""
        state = json.loads(snapshot)
        if state.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError(f"unknown window snapshot format {state.get('format')!r}")
        expected = [_describe(p.query) for p in self._plans]
        if state["queries"] != expected:
            raise ValueError(
                f"snapshot was taken with queries {state['queries']}, this engine has {expected}"
            )
        self._watermark = state["watermark"]
        self._max_ts = state["max_ts"]
        self._last_activity = state["last_activity"]
        self._active = state["active"]
        self._late = state["late"]
        self._duplicates = state["duplicates"]
        self._next_forget = state["next_forget"]
        self._fixed = {(i, k, s): accs for i, k, s, accs in state["fixed"]}
        self._sessions = {(i, k): sessions for i, k, sessions in state["sessions"]}
        self._expiry = {end: [(i, k, s) for i, k, s in ws] for end, ws in state["expiry"]}
        self._ends = list(self._expiry)
        heapq.heapify(self._ends)
        self._seen = {k: {seq: ts for seq, ts in pairs} for k, pairs in state["seen"].items()}
