"""The dashboard's clock: what time it is (staleness, rates) and how it waits (the poll
timer, reconnect backoff). ``SystemClock`` in real use; ``ManualClock`` in tests, where
time moves only when the test calls ``advance``."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time stands still until ``advance``; sleepers whose deadline has passed then wake."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        waiting = []
        for deadline, fut in self._sleepers:
            if deadline <= self._now:
                if not fut.done():
                    fut.set_result(None)
            else:
                waiting.append((deadline, fut))
        self._sleepers = waiting

    @property
    def sleepers(self) -> int:
        return sum(not f.done() for _, f in self._sleepers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut
