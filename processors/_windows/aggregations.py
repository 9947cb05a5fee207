"""Aggregations over one named field of the events in a window.

A `Reducer` is the fold: ``init() -> acc``, ``add(acc, value) -> acc``,
``result(acc) -> value``, and optionally ``merge(acc, acc) -> acc`` (needed by session
windows, whose windows merge). Accumulators must be JSON values (numbers, strings,
None, lists, dicts with string keys) so that the engine's state can be snapshotted.
An event without the field (or with it set to None) leaves the aggregation unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Reducer:
    """A fold over the values of a field. With ``timed`` set, ``add`` also receives the
    event time: ``add(acc, value, ts)`` (that is how `last` orders by event time)."""

    init: Callable[[], Any]
    add: Callable[..., Any]
    result: Callable[[Any], Any]
    merge: Callable[[Any, Any], Any] | None = None
    timed: bool = False


@dataclass(frozen=True, slots=True)
class Aggregation:
    """A reducer over one field of the event (``field=None``: the whole event)."""

    field: str | None
    reducer: Reducer


def _identity(acc: Any) -> Any:
    return acc


def _count_add(acc: int, value: Any) -> int:
    return acc + 1


def _sum_add(acc: float, value: float) -> float:
    return acc + value


def _sum_merge(a: float, b: float) -> float:
    return a + b


def _mean_add(acc: list[float], value: float) -> list[float]:
    acc[0] += value
    acc[1] += 1
    return acc


def _mean_merge(a: list[float], b: list[float]) -> list[float]:
    return [a[0] + b[0], a[1] + b[1]]


def _mean_result(acc: list[float]) -> float | None:
    return acc[0] / acc[1] if acc[1] else None


def _min_add(acc: Any, value: Any) -> Any:
    return value if acc is None or value < acc else acc


def _max_add(acc: Any, value: Any) -> Any:
    return value if acc is None or value > acc else acc


def _min_merge(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max_merge(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _last_add(acc: list[Any] | None, value: Any, ts: int) -> list[Any]:
    # On equal event times the later arrival wins.
    return [ts, value] if acc is None or ts >= acc[0] else acc


def _last_merge(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b[0] >= a[0] else a


def _last_result(acc: list[Any] | None) -> Any:
    return None if acc is None else acc[1]


def _zero() -> int:
    return 0


def _none() -> None:
    return None


def _mean_init() -> list[float]:
    return [0.0, 0]


COUNT = Reducer(_zero, _count_add, _identity, _sum_merge)
SUM = Reducer(_zero, _sum_add, _identity, _sum_merge)
MEAN = Reducer(_mean_init, _mean_add, _mean_result, _mean_merge)
MIN = Reducer(_none, _min_add, _identity, _min_merge)
MAX = Reducer(_none, _max_add, _identity, _max_merge)
LAST = Reducer(_none, _last_add, _last_result, _last_merge, timed=True)


def count(field: str | None = None) -> Aggregation:
    """The number of events (with ``field``: of events that carry it)."""
    return Aggregation(field, COUNT)


def total(field: str) -> Aggregation:
    """The sum of the field's values (0 for an empty window)."""
    return Aggregation(field, SUM)


def mean(field: str) -> Aggregation:
    """The arithmetic mean (None when no event carried the field)."""
    return Aggregation(field, MEAN)


def minimum(field: str) -> Aggregation:
    return Aggregation(field, MIN)


def maximum(field: str) -> Aggregation:
    return Aggregation(field, MAX)


def last(field: str) -> Aggregation:
    """The value of the event with the latest event time (not the latest arrival)."""
    return Aggregation(field, LAST)


def reducer(
    field: str | None,
    init: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    result: Callable[[Any], Any] = _identity,
    merge: Callable[[Any, Any], Any] | None = None,
) -> Aggregation:
    """A custom aggregation from its fold functions (``merge`` for session windows)."""
    return Aggregation(field, Reducer(init, add, result, merge))


def fold(field: str | None, function: Callable[[Any, Any], Any], initial: Any) -> Aggregation:
    """A custom aggregation as a fold ``function(acc, value) -> acc`` from ``initial``
    (a JSON value; copied for each window). Not mergeable: not for session windows."""
    encoded = _json_copy(initial)
    return Aggregation(field, Reducer(lambda: _json_copy(encoded), function, _identity))


def _json_copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    return value
