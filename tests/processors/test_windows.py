"""The window engine's pure core, as its spec: window kinds, aggregations, the engine
with a driven clock (watermark, grace, late side output, idle close, sessions, emission
modes, dedup), snapshots, and a property test against a naive recomputation."""

from __future__ import annotations

from typing import Any

import pytest

from processors.windows import (
    Hopping,
    Session,
    Tumbling,
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
