"""Event-time windows: the pure core of Vigil's stream processors.

One `WindowEngine` per partition. The shell feeds it the partition's events in log
order (`WindowEngine.process`), ticks it with the wall clock (`WindowEngine.advance`),
and checkpoints `WindowEngine.snapshot` together with the input offsets. Nothing here
does I/O, reads a clock or starts a thread.
"""

from __future__ import annotations

from ._windows.aggregations import (
    Aggregation,
    Reducer,
    count,
    fold,
    last,
    maximum,
    mean,
    minimum,
    reducer,
    total,
)
from ._windows.engine import Emit, LateEvent, Output, Query, WindowEngine, WindowResult
from ._windows.kinds import Hopping, Session, Tumbling, WindowKind, sliding

__all__ = [
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
