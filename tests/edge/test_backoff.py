"""Reconnect backoff: exponential, capped, jittered so a fleet does not reconnect in lockstep."""

from __future__ import annotations

import random

from edge.publisher import backoff_delay


def test_backoff_doubles_up_to_the_cap_within_its_jitter_band() -> None:
    for attempt, cap in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (40, 60.0)]:
        assert backoff_delay(attempt, 1.0, 60.0, rnd=lambda: 0.0) == max(1.0, cap / 2)
        assert backoff_delay(attempt, 1.0, 60.0, rnd=lambda: 0.999999) <= cap
    assert 0.5 <= backoff_delay(0, 1.0, 60.0) <= 1.0


def test_a_fleet_spreads_out() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(5, 1.0, 60.0, rnd=rng.random), 1) for _ in range(100)}
    assert len(delays) > 50 and min(delays) >= 16.0 and max(delays) <= 32.0
