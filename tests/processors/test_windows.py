"""The window engine's pure core, as its spec: window kinds, aggregations, the engine
with a driven clock (watermark, grace, late side output, idle close, sessions, emission
modes, dedup), snapshots, and a property test against a naive recomputation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.windows import (
    Emit,
    Hopping,
    LateEvent,
    Output,
    Query,
    Session,
    Tumbling,
    WindowEngine,
    WindowResult,
    count,
    fold,
    last,
    maximum,
    mean,
    minimum,
    reducer,
    sliding,
    total,
)

# -- window kinds ----------------------------------------------------------------------


def test_tumbling_window_is_the_aligned_half_open_interval() -> None:
    w = Tumbling(10_000)
    assert w.windows(0) == [(0, 10_000)]
    assert w.windows(9_999) == [(0, 10_000)]
    assert w.windows(10_000) == [(10_000, 20_000)]
    assert w.windows(-1) == [(-10_000, 0)]


def test_hopping_event_falls_in_size_over_step_windows() -> None:
    w = Hopping(10_000, 5_000)
    assert w.windows(7_000) == [(0, 10_000), (5_000, 15_000)]
    assert w.windows(10_000) == [(5_000, 15_000), (10_000, 20_000)]
    assert Hopping(10, 3).windows(10) == [(3, 13), (6, 16), (9, 19)]


def test_sliding_is_hopping_with_a_small_step() -> None:
    w = sliding(60_000)
    assert w == Hopping(60_000, 1_000)
    assert len(w.windows(123_456)) == 60
    assert all(start <= 123_456 < end for start, end in w.windows(123_456))


@pytest.mark.parametrize(
    "make",
    [lambda: Tumbling(0), lambda: Hopping(10, 0), lambda: Hopping(10, 20), lambda: Session(0)],
)
def test_nonsense_windows_are_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


# -- aggregations ----------------------------------------------------------------------


def _fold_all(agg: Any, values: list[tuple[int, Any]]) -> Any:
    r = agg.reducer
    acc = r.init()
    for ts, v in values:
        acc = r.add(acc, v, ts) if r.timed else r.add(acc, v)
    return r.result(acc)


def test_builtin_aggregations() -> None:
    values = [(3, 5.0), (1, 2.0), (2, 8.0)]
    assert _fold_all(count("x"), values) == 3
    assert _fold_all(total("x"), values) == 15.0
    assert _fold_all(mean("x"), values) == 5.0
    assert _fold_all(minimum("x"), values) == 2.0
    assert _fold_all(maximum("x"), values) == 8.0
    assert _fold_all(last("x"), values) == 5.0  # by event time, not arrival


def test_empty_aggregations() -> None:
    assert _fold_all(count(), []) == 0
    assert _fold_all(total("x"), []) == 0
    assert _fold_all(mean("x"), []) is None
    assert _fold_all(minimum("x"), []) is None
    assert _fold_all(last("x"), []) is None


def test_custom_reducer_and_fold() -> None:
    spread = reducer(
        "x",
        init=lambda: [None, None],
        add=lambda acc, v: [
            v if acc[0] is None else min(acc[0], v),
            v if acc[1] is None else max(acc[1], v),
        ],
        result=lambda acc: None if acc[0] is None else acc[1] - acc[0],
    )
    assert _fold_all(spread, [(0, 4), (1, 9), (2, 6)]) == 5
    distinct = fold("kind", lambda acc, v: sorted({*acc, v}), [])
    assert _fold_all(distinct, [(0, "gps"), (1, "obd"), (2, "gps")]) == ["gps", "obd"]
    assert _fold_all(distinct, []) == []  # the initial value is not shared between windows


def test_merges_combine_partial_accumulators() -> None:
    for agg in (count("x"), total("x"), mean("x"), minimum("x"), maximum("x"), last("x")):
        r = agg.reducer
        assert r.merge is not None
        a = r.add(r.init(), 3, 10) if r.timed else r.add(r.init(), 3)
        b = r.add(r.init(), 7, 5) if r.timed else r.add(r.init(), 7)
        assert r.result(r.merge(a, b)) == _fold_all(agg, [(10, 3), (5, 7)])


# -- the engine ------------------------------------------------------------------------

Event = tuple[str, int, int, dict[str, Any]]  # key, seq, ts, values


def feed(engine: WindowEngine, events: list[Event]) -> tuple[list[WindowResult], list[LateEvent]]:
    results: list[WindowResult] = []
    late: list[LateEvent] = []
    for key, seq, ts, values in events:
        out = engine.process(key, seq, ts, values)
        results.extend(out.results)
        late.extend(out.late)
    return results, late


def speed_engine(**options: Any) -> WindowEngine:
    query = Query("speed", Tumbling(10_000), {"mean": mean("speed"), "n": count()})
    return WindowEngine([query], **options)


def test_a_window_emits_its_final_result_once_the_watermark_passes_end_plus_grace() -> None:
    engine = speed_engine(max_out_of_order_ms=2_000, grace_ms=1_000)
    results, _ = feed(engine, [("car", 1, 1_000, {"speed": 10}), ("car", 2, 9_000, {"speed": 20})])
    assert results == []
    # watermark = 12_999 - 2_000 = 10_999 < 10_000 + 1_000: still open
    assert feed(engine, [("car", 3, 12_999, {"speed": 0})])[0] == []
    results, _ = feed(engine, [("car", 4, 13_000, {"speed": 0})])
    assert results == [WindowResult("speed", "car", 0, 10_000, {"mean": 15.0, "n": 2}, True)]
    assert engine.watermark == 11_000


def test_out_of_order_events_within_the_bound_count_in_their_window() -> None:
    engine = speed_engine(max_out_of_order_ms=5_000)
    results, late = feed(
        engine,
        [
            ("car", 1, 8_000, {"speed": 10}),
            ("car", 2, 14_000, {"speed": 99}),  # watermark 9_000
            ("car", 3, 9_500, {"speed": 30}),  # older, but its window is open
            ("car", 4, 20_000, {"speed": 99}),  # watermark 15_000: [0, 10 s) closes
        ],
    )
    assert late == []
    assert results == [WindowResult("speed", "car", 0, 10_000, {"mean": 20.0, "n": 2}, True)]


def test_an_event_later_than_end_plus_grace_is_a_counted_side_output() -> None:
    engine = speed_engine(max_out_of_order_ms=0, grace_ms=2_000)
    feed(engine, [("car", 1, 5_000, {"speed": 10}), ("car", 2, 11_000, {"speed": 10})])
    # watermark 11_000 < 12_000: in grace, still counted
    results, late = feed(engine, [("car", 3, 9_000, {"speed": 40})])
    assert (results, late) == ([], [])
    results, _ = feed(engine, [("car", 4, 12_000, {"speed": 10})])
    assert results[0].values == {"mean": 25.0, "n": 2}
    results, late = feed(engine, [("car", 5, 9_999, {"speed": 70})])
    assert results == []
    assert late == [LateEvent("speed", "car", 5, 9_999, {"speed": 70}, 12_000)]
    assert engine.late_count == 1


def test_an_idle_partition_closes_its_windows_by_the_wall_clock() -> None:
    engine = speed_engine(max_out_of_order_ms=1_000, idle_timeout_ms=30_000)
    engine.advance(100_000)
    feed(engine, [("car", 1, 101_000, {"speed": 50})])
    assert engine.advance(101_000).results == ()  # events came since the last tick
    assert engine.advance(130_999).results == ()  # idle for 29.999 s
    out = engine.advance(131_000)  # idle for 30 s: watermark = 130_000
    assert out.results == (
        WindowResult("speed", "car", 100_000, 110_000, {"mean": 50.0, "n": 1}, True),
    )
    assert engine.watermark == 130_000


def test_without_an_idle_timeout_the_wall_clock_never_closes_windows() -> None:
    engine = speed_engine()
    engine.advance(0)
    feed(engine, [("car", 1, 1_000, {"speed": 50})])
    assert engine.advance(10**9).results == ()
    assert engine.open_windows == 1


def test_a_silent_key_closes_when_the_partition_moves_on() -> None:
    engine = speed_engine()
    feed(engine, [("quiet", 1, 1_000, {"speed": 5})])
    results, _ = feed(engine, [("busy", 1, 25_000, {"speed": 1})])
    assert [(r.key, r.start) for r in results] == [("quiet", 0)]


def test_several_aggregations_over_named_fields_skip_events_without_the_field() -> None:
    query = Query(
        "vitals",
        Tumbling(60_000),
        {
            "pulse_mean": mean("pulse"),
            "pulse_max": maximum("pulse"),
            "spo2_min": minimum("spo2"),
            "spo2_last": last("spo2"),
            "readings": count(),
            "pulse_readings": count("pulse"),
            "steps": total("steps"),
        },
    )
    engine = WindowEngine([query])
    feed(
        engine,
        [
            ("bed1", 1, 1_000, {"pulse": 80, "spo2": 97}),
            ("bed1", 2, 3_000, {"spo2": 95, "steps": 3}),
            ("bed1", 3, 2_000, {"pulse": 100, "spo2": 91}),
        ],
    )
    results, _ = feed(engine, [("bed1", 4, 60_000, {})])
    assert results[0].values == {
        "pulse_mean": 90.0,
        "pulse_max": 100,
        "spo2_min": 91,
        "spo2_last": 95,  # ts 3_000 is the latest event time, though not the last arrival
        "readings": 3,
        "pulse_readings": 2,
        "steps": 3,
    }


def test_hopping_windows_each_get_the_event() -> None:
    engine = WindowEngine([Query("q", Hopping(10_000, 5_000), {"n": count()})])
    results, _ = feed(engine, [("k", 1, 7_000, {}), ("k", 2, 12_000, {}), ("k", 3, 30_000, {})])
    assert [(r.start, r.end, r.values["n"]) for r in results] == [
        (0, 10_000, 1),
        (5_000, 15_000, 2),
        (10_000, 20_000, 1),
    ]


def test_update_mode_emits_every_change_then_the_final_result() -> None:
    query = Query("speed", Tumbling(10_000), {"max": maximum("speed")}, emit=Emit.UPDATE)
    engine = WindowEngine([query])
    results, _ = feed(
        engine,
        [
            ("car", 1, 1_000, {"speed": 10}),
            ("car", 2, 2_000, {"speed": 30}),
            ("car", 3, 10_000, {"speed": 5}),
        ],
    )
    assert [(r.start, r.values["max"], r.final) for r in results] == [
        (0, 10, False),
        (0, 30, False),
        (10_000, 5, False),
        (0, 30, True),
    ]


def test_final_and_update_queries_side_by_side() -> None:
    engine = WindowEngine(
        [
            Query("final", Tumbling(10_000), {"n": count()}),
            Query("live", Tumbling(10_000), {"n": count()}, emit=Emit.UPDATE),
        ]
    )
    results, _ = feed(engine, [("k", 1, 0, {}), ("k", 2, 10_000, {})])
    assert [(r.query, r.start, r.final) for r in results] == [
        ("live", 0, False),
        ("live", 10_000, False),
        ("final", 0, True),
        ("live", 0, True),
    ]


def test_a_repeated_seq_is_ignored_and_counted() -> None:
    engine = speed_engine()
    feed(
        engine,
        [
            ("car", 1, 1_000, {"speed": 10}),
            ("car", 1, 1_000, {"speed": 10}),
            ("van", 1, 2_000, {"speed": 30}),
        ],
    )
    assert engine.duplicate_count == 1  # the van's seq 1 is its own
    results, _ = feed(engine, [("car", 2, 10_000, {"speed": 0})])
    assert {r.key: r.values["n"] for r in results} == {"car": 1, "van": 1}


def test_a_copy_resent_after_its_window_closed_is_late_never_counted_twice() -> None:
    engine = speed_engine()
    feed(engine, [("car", 1, 1_000, {"speed": 10}), ("car", 2, 10_000, {"speed": 0})])
    results, late = feed(engine, [("car", 1, 1_000, {"speed": 10})])
    assert results == []
    assert len(late) + engine.duplicate_count == 1


def test_sessions_split_on_a_gap_and_close_when_the_device_goes_silent() -> None:
    engine = WindowEngine(
        [Query("trip", Session(60_000), {"n": count(), "top": maximum("speed")})],
        idle_timeout_ms=120_000,
    )
    engine.advance(0)
    results, _ = feed(
        engine,
        [
            ("car", 1, 0, {"speed": 30}),
            ("car", 2, 50_000, {"speed": 60}),
            ("car", 3, 200_000, {"speed": 20}),  # 150 s after the last: a new session
        ],
    )
    assert results == [WindowResult("trip", "car", 0, 110_000, {"n": 2, "top": 60}, True)]
    engine.advance(200_000)
    assert engine.advance(319_999).results == ()
    # silent for idle_timeout: the watermark follows the wall clock, the session closes
    assert engine.advance(320_000).results == (
        WindowResult("trip", "car", 200_000, 260_000, {"n": 1, "top": 20}, True),
    )


def test_an_event_that_bridges_two_sessions_merges_them() -> None:
    engine = WindowEngine(
        [
            Query(
                "trip",
                Session(10_000),
                {"n": count(), "mean": mean("speed"), "last": last("speed")},
            )
        ],
        max_out_of_order_ms=30_000,
    )
    feed(engine, [("car", 1, 0, {"speed": 10}), ("car", 2, 25_000, {"speed": 20})])
    assert engine.open_windows == 2
    feed(engine, [("car", 3, 12_000, {"speed": 30})])  # [12 s, 22 s) touches neither
    assert engine.open_windows == 3
    feed(engine, [("car", 4, 8_000, {"speed": 40})])  # bridges [0, 10 s) and [12 s, 22 s)
    assert engine.open_windows == 2
    feed(engine, [("car", 5, 18_000, {"speed": 0})])  # bridges the rest
    assert engine.open_windows == 1
    results, _ = feed(engine, [("car", 6, 100_000, {"speed": 0})])
    assert results == [
        WindowResult("trip", "car", 0, 35_000, {"n": 5, "mean": 20.0, "last": 20}, True)
    ]


def test_session_windows_need_mergeable_aggregations() -> None:
    with pytest.raises(ValueError, match="merge"):
        WindowEngine([Query("q", Session(1_000), {"f": fold("x", lambda a, v: a + v, 0)})])


# -- snapshots -------------------------------------------------------------------------


def _mixed_queries() -> list[Query]:
    return [
        Query("tumbling", Tumbling(10_000), {"mean": mean("v"), "last": last("v")}),
        Query(
            "hopping", Hopping(20_000, 5_000), {"max": maximum("v"), "n": count()}, emit=Emit.UPDATE
        ),
        Query("session", Session(7_000), {"sum": total("v"), "min": minimum("v")}),
    ]


def _stream(n: int) -> list[Event]:
    import random

    rng = random.Random(7)
    events: list[Event] = []
    for i in range(n):
        key = f"dev{rng.randrange(5)}"
        ts = i * 700 - rng.randrange(4_000)
        events.append((key, i, ts, {"v": rng.randrange(100)}))
        if rng.random() < 0.1:
            events.append(events[rng.randrange(len(events))])  # resent copies
    return events


def test_a_restored_engine_gives_the_results_of_one_that_never_stopped() -> None:
    options: dict[str, Any] = {
        "max_out_of_order_ms": 3_000,
        "grace_ms": 500,
        "idle_timeout_ms": 5_000,
    }
    events = _stream(600)
    steady = WindowEngine(_mixed_queries(), **options)
    expected, expected_late = feed(steady, events)
    expected.extend(steady.advance(0).results + steady.advance(10**7).results)
    for cut in (1, 137, 300, 451):
        first = WindowEngine(_mixed_queries(), **options)
        results, late = feed(first, events[:cut])
        restored = WindowEngine(_mixed_queries(), **options)
        restored.restore(first.snapshot())
        more, more_late = feed(restored, events[cut:])
        more.extend(restored.advance(0).results + restored.advance(10**7).results)
        assert results + more == expected
        assert late + more_late == expected_late
        assert (restored.late_count, restored.duplicate_count) == (
            steady.late_count,
            steady.duplicate_count,
        )


def test_a_snapshot_is_json_and_refuses_other_queries() -> None:
    engine = speed_engine()
    feed(engine, [("car", 1, 1_000, {"speed": 10})])
    snapshot = engine.snapshot()
    assert json.loads(snapshot)["format"] == 1
    other = WindowEngine([Query("speed", Tumbling(5_000), {"mean": mean("speed"), "n": count()})])
    with pytest.raises(ValueError, match="queries"):
        other.restore(snapshot)


# -- property: the engine equals a naive recomputation ----------------------------------

BOUND = 5_000


@st.composite
def in_bound_streams(draw: st.DrawFn) -> list[Event]:
    """Events whose times never fall more than BOUND behind the latest seen."""
    n = draw(st.integers(0, 60))
    events: list[Event] = []
    high = 0
    for seq in range(n):
        ts = draw(st.integers(max(0, high - BOUND), high + 8_000))
        high = max(high, ts)
        key = draw(st.sampled_from(["a", "b", "c"]))
        events.append((key, seq, ts, {"v": draw(st.integers(-50, 50))}))
    return events


def naive(
    kind: Tumbling | Hopping, events: list[Event]
) -> set[tuple[str, int, int, int, int, int | None]]:
    groups: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    for key, _, ts, values in events:
        for start, end in kind.windows(ts):
            groups.setdefault((key, start, end), []).append((ts, values["v"]))
    out = set()
    for (key, start, end), items in groups.items():
        vs = [v for _, v in items]
        latest = max(items, key=lambda item: item[0])[0]
        last_v = [v for t, v in items if t == latest][-1]
        out.add((key, start, end, len(vs), sum(vs), max(vs), last_v))
    return out


@settings(max_examples=150, deadline=None)
@given(
    events=in_bound_streams(),
    kind=st.sampled_from(
        [Tumbling(10_000), Tumbling(3_000), Hopping(10_000, 5_000), Hopping(9_000, 2_000)]
    ),
)
def test_final_results_equal_a_naive_recomputation(
    events: list[Event], kind: Tumbling | Hopping
) -> None:
    query = Query(
        "q", kind, {"n": count(), "sum": total("v"), "max": maximum("v"), "last": last("v")}
    )
    engine = WindowEngine([query], max_out_of_order_ms=BOUND, idle_timeout_ms=1)
    results, late = feed(engine, events)
    engine.advance(0)
    results.extend(engine.advance(10**9).results)
    assert late == []
    assert all(r.final for r in results)
    got = [
        (r.key, r.start, r.end, r.values["n"], r.values["sum"], r.values["max"], r.values["last"])
        for r in results
    ]
    assert len(got) == len(set(got))
    assert set(got) == naive(kind, events)


def naive_sessions(
    gap: int, events: list[Event]
) -> set[tuple[str, int, int, int, int, int | None]]:
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, _, ts, values in events:
        by_key.setdefault(key, []).append((ts, values["v"]))
    out = set()
    for key, items in by_key.items():
        items.sort(key=lambda item: item[0])  # stable: equal times keep arrival order
        groups: list[list[tuple[int, int]]] = []
        for item in items:
            if groups and item[0] < groups[-1][-1][0] + gap:
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            vs = [v for _, v in group]
            out.add((key, group[0][0], group[-1][0] + gap, len(vs), sum(vs), group[-1][1]))
    return out


@settings(max_examples=150, deadline=None)
@given(events=in_bound_streams(), gap=st.sampled_from([1_000, 4_000, 9_000]))
def test_session_results_equal_a_naive_recomputation(events: list[Event], gap: int) -> None:
    query = Query("q", Session(gap), {"n": count(), "sum": total("v"), "last": last("v")})
    engine = WindowEngine([query], max_out_of_order_ms=BOUND, idle_timeout_ms=1)
    results, late = feed(engine, events)
    engine.advance(0)
    results.extend(engine.advance(10**9).results)
    assert late == []
    got = [
        (r.key, r.start, r.end, r.values["n"], r.values["sum"], r.values["last"]) for r in results
    ]
    assert len(got) == len(set(got))
    assert set(got) == naive_sessions(gap, events)


# -- edges -------------------------------------------------------------------------------


def test_an_event_late_for_one_hopping_window_still_counts_in_the_open_ones() -> None:
    engine = WindowEngine([Query("q", Hopping(10_000, 5_000), {"n": count()})])
    feed(engine, [("k", 1, 1_000, {}), ("k", 2, 11_000, {})])  # closes [0, 10 s)
    results, late = feed(engine, [("k", 3, 9_000, {})])  # misses [0, 10 s), fits [5 s, 15 s)
    assert [(e.seq, e.query) for e in late] == [(3, "q")]
    results, _ = feed(engine, [("k", 4, 40_000, {})])
    assert [(r.start, r.values["n"]) for r in results] == [(5_000, 2), (10_000, 1)]


def test_after_an_idle_close_a_device_whose_clock_lags_comes_out_late() -> None:
    """The price of closing on the wall clock: a device whose clock is behind the
    wall clock by more than the bound has its next events reported late, not lost."""
    engine = speed_engine(max_out_of_order_ms=1_000, idle_timeout_ms=10_000)
    engine.advance(100_000)
    feed(engine, [("car", 1, 50_000, {"speed": 1})])  # its clock is 50 s behind
    engine.advance(100_000)
    closed = engine.advance(110_000).results  # watermark 109_000
    assert [r.start for r in closed] == [50_000]
    _, late = feed(engine, [("car", 2, 60_000, {"speed": 2})])
    assert [e.seq for e in late] == [2]
    assert engine.late_count == 1


def test_dedup_retains_only_the_seqs_of_open_windows() -> None:
    engine = speed_engine(max_out_of_order_ms=1_000)
    feed(engine, [(f"dev{i % 10}", i // 10, i * 100, {"speed": 1}) for i in range(10_000)])
    retained = json.loads(engine.snapshot())["seen"]
    assert sum(len(seqs) for seqs in retained.values()) <= 300  # about two windows' worth
    assert engine.open_windows <= 20


def test_the_public_face() -> None:
    import processors.windows

    assert sorted(processors.windows.__all__) == [
        "Aggregation",
        "Emit",
        "Hopping",
        "LateEvent",
        "Output",
        "Query",
        "Reducer",
        "Session",
        "Tumbling",
        "WindowEngine",
        "WindowKind",
        "WindowResult",
        "count",
        "fold",
        "last",
        "maximum",
        "mean",
        "minimum",
        "reducer",
        "sliding",
        "total",
    ]


Op = tuple[str, int, int, int]  # ("event", key index, seq, ts) or ("tick", 0, 0, now)


@st.composite
def operations(draw: st.DrawFn) -> list[Op]:
    """Events (out of order, late, resent) and wall-clock ticks, in any mix."""
    ops: list[Op] = []
    now = 0
    for seq in range(draw(st.integers(0, 50))):
        if draw(st.booleans()):
            now += draw(st.integers(0, 6_000))
            ops.append(("tick", 0, 0, now))
        if ops and draw(st.integers(0, 9)) == 0:
            ops.append(draw(st.sampled_from(ops)))  # a resent copy (or a repeated tick)
        ops.append(("event", draw(st.integers(0, 2)), seq, draw(st.integers(0, 60_000))))
    return ops


def run_ops(engine: WindowEngine, ops: list[Op]) -> list[Output]:
    outputs = []
    for op, key, seq, t in ops:
        if op == "tick":
            outputs.append(engine.advance(t))
        else:
            outputs.append(engine.process(f"dev{key}", seq, t, {"v": seq % 7}))
    return outputs


@settings(max_examples=100, deadline=None)
@given(ops=operations(), cut=st.integers(0, 120))
def test_snapshot_and_restore_anywhere_changes_nothing(ops: list[Op], cut: int) -> None:
    options: dict[str, Any] = {
        "max_out_of_order_ms": 2_000,
        "grace_ms": 1_000,
        "idle_timeout_ms": 5_000,
    }
    steady = WindowEngine(_mixed_queries(), **options)
    expected = run_ops(steady, ops)
    first = WindowEngine(_mixed_queries(), **options)
    before = run_ops(first, ops[:cut])
    second = WindowEngine(_mixed_queries(), **options)
    second.restore(first.snapshot())
    after = run_ops(second, ops[cut:])
    assert before + after == expected
    assert second.snapshot() == steady.snapshot()
