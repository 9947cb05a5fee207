"""Replays ``recorded_api.json`` (see ``record_api.py``) through the client's seam, an
httpx transport, so the snapshot tests draw the same data every time. The alert stream
connects and then stays quiet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

RECORDED = Path(__file__).with_name("recorded_api.json")
ROUNDS = 3  # recorded polls of /devices and /cluster


class _Quiet(httpx.AsyncByteStream):
    """An SSE body: the greeting, then nothing until the client goes away."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n: connected\n\n"
        await asyncio.Event().wait()


class Recorded:
    def __init__(self, path: Path = RECORDED) -> None:
        self.data: dict[str, Any] = json.loads(path.read_text())
        self.calls: dict[str, int] = {}
        self.down = False  # True: every request fails to connect

    def _next(self, name: str) -> Any:
        i = self.calls.get(name, 0)
        self.calls[name] = i + 1
        return self.data[name][min(i, len(self.data[name]) - 1)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        path = request.url.path
        q = request.url.params
        if path == "/alerts/stream":
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Quiet())
        if path == "/devices":
            return httpx.Response(200, json=self._next("devices"))
        if path == "/cluster":
            return httpx.Response(200, json=self._next("cluster"))
        if path == "/healthz":
            return httpx.Response(200, json=self.data["healthz"])
        if path == "/alerts":
            if "device" in q:
                return httpx.Response(200, json=self.data["alerts_by_device"][q["device"]])
            states = set(q.get_list("state"))
            return httpx.Response(200, json=self.data["alerts_resolved" if states == {"resolved"}
                                                      else "alerts_active"])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"not recorded: {path}"}})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)
