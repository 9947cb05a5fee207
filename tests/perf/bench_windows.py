"""Window engine micro-benchmark, run by hand: `python tests/perf/bench_windows.py [--events N]`.

A 10-second tumbling mean per key over 1,000,000 events from 1,000 keys (each key one
event per second of event time, up to 0.5 s out of order), as dict events, through the
pure engine (`processors.windows.WindowEngine`, one partition, 1 s out-of-orderness
bound, dedup on). The baseline is a plain Python dict loop computing the same means with
no watermark, lateness or dedup, emitting everything at the end. Both are checked to give
the same means. Prints events/s for each.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.windows import Query, Tumbling, WindowEngine, mean

SIZE_MS = 10_000


def make_events(n: int, keys: int) -> list[tuple[str, int, int, dict[str, Any]]]:
    rng = random.Random(1)
    names = [f"dev{k:04d}" for k in range(keys)]
    events = []
    for i in range(n):
        k = i % keys
        ts = 1_700_000_000_000 + i - rng.randrange(500)  # 1,000 keys: one event/s each
        events.append((names[k], i // keys, ts, {"value": rng.random() * 100}))
    return events


def run_engine(events: list[tuple[str, int, int, dict[str, Any]]]) -> dict[tuple[str, int], float]:
    engine = WindowEngine(
        [Query("mean", Tumbling(SIZE_MS), {"mean": mean("value")})],
        max_out_of_order_ms=1_000,
        idle_timeout_ms=1,
    )
    out: dict[tuple[str, int], float] = {}
    process = engine.process
    for key, seq, ts, values in events:
        emitted = process(key, seq, ts, values)
        for r in emitted.results:
            out[(r.key, r.start)] = r.values["mean"]
    engine.advance(0)
    for r in engine.advance(2**52).results:
        out[(r.key, r.start)] = r.values["mean"]
    return out


def run_baseline(
    events: list[tuple[str, int, int, dict[str, Any]]],
) -> dict[tuple[str, int], float]:
    sums: dict[tuple[str, int], list[float]] = {}
    for key, _seq, ts, values in events:
        start = ts - ts % SIZE_MS
        acc = sums.get((key, start))
        if acc is None:
            sums[(key, start)] = [values["value"], 1]
        else:
            acc[0] += values["value"]
            acc[1] += 1
    return {k: s / c for k, (s, c) in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    args = parser.parse_args()
    events = make_events(args.events, args.keys)
    timings = {}
    results = {}
    for name, run in (("baseline dict loop", run_baseline), ("window engine", run_engine)):
        began = time.perf_counter()
        results[name] = run(events)
        timings[name] = time.perf_counter() - began
    a, b = results["baseline dict loop"], results["window engine"]
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a), "means differ"
    print(f"{args.events:,} events, {args.keys:,} keys, {len(a):,} windows of {SIZE_MS / 1000:g} s")
    for name, seconds in timings.items():
        print(f"{name:>20}: {args.events / seconds:>12,.0f} events/s ({seconds:.2f} s)")
    print(
        f"{'engine / baseline':>20}: {timings['baseline dict loop'] / timings['window engine']:.2f}"
    )


if __name__ == "__main__":
    main()
