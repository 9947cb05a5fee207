"""Window kinds: which event-time windows an event falls into.

A window is ``[start, end)`` in milliseconds of event time. Tumbling and hopping
windows are aligned to the epoch (a window starts at a multiple of its step), so every
key and every partition agree on the boundaries. Session windows have no fixed
boundaries: the engine grows and merges them as events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Back-to-back windows of ``size_ms``: each event falls in exactly one."""

    size_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be positive, got {self.size_ms}")

    @property
    def retention_ms(self) -> int:
        """How far behind an event's time its windows may still be open."""
        return self.size_ms

    def windows(self, ts: int) -> list[tuple[int, int]]:
        start = ts - ts % self.size_ms
        return [(start, start + self.size_ms)]


@dataclass(frozen=True, slots=True)
class Hopping:
    """Windows of ``size_ms`` starting every ``step_ms``: an event falls in
    ``ceil(size / step)`` of them (fewer when ``step`` does not divide ``size``)."""

    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError(f"size and step must be positive, got {self.size_ms}, {self.step_ms}")
        if self.step_ms > self.size_ms:
            raise ValueError(f"step {self.step_ms} > size {self.size_ms} would leave gaps")

    @property
    def retention_ms(self) -> int:
        return self.size_ms

    def windows(self, ts: int) -> list[tuple[int, int]]:
        size, step = self.size_ms, self.step_ms
        start = ts - ts % step
        out: list[tuple[int, int]] = []
        while start + size > ts:
            out.append((start, start + size))
            start -= step
        out.reverse()
        return out


def sliding(size_ms: int, step_ms: int = 1_000) -> Hopping:
    """A sliding window, as hopping windows with a small step (1 s by default).

    The result for "the last ``size_ms``" is exact at every multiple of ``step_ms``; an
    event costs ``size / step`` window updates, so keep the step coarse enough.
    """
    return Hopping(size_ms, step_ms)


@dataclass(frozen=True, slots=True)
class Session:
    """Windows of activity per key: an event at ``t`` opens ``[t, t + gap_ms)``;
    windows that overlap merge. A session closes once no event came for ``gap_ms``
    (in event time, as the watermark sees it), which is how "no data" is detected."""

    gap_ms: int

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ValueError(f"session gap must be positive, got {self.gap_ms}")

    @property
    def retention_ms(self) -> int:
        return self.gap_ms


WindowKind = Tumbling | Hopping | Session
