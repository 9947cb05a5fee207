"""``GET /alerts/stream``: the store's change feed as Server-Sent Events.

One ``ChangeFeed`` per app reads each committed change once (woken by the store's
``ChangeNotifier``), serialises it once, and keeps the newest ``keep`` in memory; every
stream sends from that window. A stream resuming from further back (``Last-Event-ID``)
first reads the store itself, page by page, until it reaches the window: so a client
gets every change after its last id, in order, once, then the live ones.

Event ids are the store's change numbers; ``event`` is the change's kind; ``data`` is a
``ChangeEvent`` (JSON). A ``: keepalive`` comment goes out after ``keepalive`` seconds
without an event (proxies and clients see a live connection).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from gateway.api.webhook_routes import change_event
from gateway.store import AlertDB, AlertFilter

__all__ = ["ChangeFeed", "event_bytes", "stream_changes"]

log = logging.getLogger("vigil.api")

_PAGE = 500


def event_bytes(h: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (h["id"], h["kind"].encode(),
                                                  change_event(h).model_dump_json().encode())


class ChangeFeed:
    """The newest changes, read and serialised once for every stream (asyncio side)."""

    def __init__(self, db: AlertDB, keep: int = 10_000) -> None:
        self.db = db
        self.keep = keep
        self.ids: list[int] = []
        self.entries: list[tuple[dict[str, Any], bytes]] = []  # (alert snapshot, event bytes)
        self.base = 0  # the window holds the changes after base
        self.changed = asyncio.Event()  # replaced after each read: waiters wake
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: int | None = None
        self._ready: asyncio.Event | None = None

    async def start(self) -> None:
        """Start reading (on the first stream, in the serving loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._ready is not None and (self._task is None or not self._task.done()):
            await self._ready.wait()  # started, or being started by another stream
            return
        self._loop, self._ready = loop, asyncio.Event()  # no await before this: no race
        self.changed, self._wake = asyncio.Event(), asyncio.Event()
        self.ids, self.entries = [], []
        if self._token is not None:
            self.db.notifier.unsubscribe(self._token)
        wake = self._wake

        def notified(_last: int) -> None:  # on the writer's thread
            loop.call_soon_threadsafe(wake.set)

        self._token = self.db.notifier.subscribe(notified)
        self.base = await anyio.to_thread.run_sync(self.db.last_change_id)
        self._task = loop.create_task(self._run(), name="vigil-change-feed")
        self._ready.set()

    async def close(self) -> None:
        if self._token is not None:
            self.db.notifier.unsubscribe(self._token)
            self._token = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def last(self) -> int:
        return self.ids[-1] if self.ids else self.base

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before reading: a commit after this wakes us again
            try:
                rows = await anyio.to_thread.run_sync(self.db.changes_after, self.last, _PAGE)
            except Exception:
                log.exception("reading the change feed failed; retrying")
                rows = []
                await asyncio.sleep(1)
            if rows:
                for h in rows:
                    self.ids.append(h["id"])
                    self.entries.append((h["alert"], event_bytes(h)))
                if len(self.ids) > self.keep * 2:  # trim in steps, not on every change
                    cut = len(self.ids) - self.keep
                    self.base = self.ids[cut - 1]
                    del self.ids[:cut], self.entries[:cut]
                changed, self.changed = self.changed, asyncio.Event()
                changed.set()
            if len(rows) < _PAGE:
                # a fallback poll, for writers in other processes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def after(self, change: int) -> list[tuple[int, dict[str, Any], bytes]] | None:
        """The cached changes after ``change``; None when ``change`` is older than the window."""
        if change < self.base:
            return None
        i = bisect.bisect_right(self.ids, change)
        return [(self.ids[j], *self.entries[j]) for j in range(i, len(self.ids))]


async def stream_changes(feed: ChangeFeed, after: int, flt: AlertFilter, keepalive: float,
                         on_sent: Any = None, reset: bool = False) -> AsyncIterator[bytes]:
    """The SSE body: the changes after ``after`` (those ``flt`` selects), then live ones;
    first an ``event: reset`` when the client's id is unknown to this store."""
    await feed.start()
    yield b"retry: 2000\n: connected\n\n"
    if reset:
        yield (b'event: reset\ndata: {"reason": "Last-Event-ID is ahead of this store (rebuilt '
               b'from the log?): reload the alerts, then follow the stream", "last_change": %d}\n\n' % after)
    while True:
        changed = feed.changed  # taken before reading: a change after this sets it
        cached = feed.after(after)
        if cached is None:  # behind the window: read the store
            rows = await anyio.to_thread.run_sync(feed.db.changes_after, after, _PAGE)
            chunk = [event_bytes(h) for h in rows if flt.matches(h["alert"])]
            if rows:
                after = rows[-1]["id"]
        else:
            chunk = [data for _, snapshot, data in cached if flt.matches(snapshot)]
            if cached:
                after = cached[-1][0]
        if chunk:
            if on_sent is not None:
                on_sent(len(chunk))
            yield b"".join(chunk)
            continue
        if cached is None and len(rows) == _PAGE:
            continue
        if cached:
            continue
        try:
            await asyncio.wait_for(changed.wait(), timeout=keepalive)
        except TimeoutError:
            yield b": keepalive\n\n"
