"""The dashboard's one way to the gateway: a small async client of Vigil's HTTP API.

It speaks JSON dicts (the API's documented shapes), nothing imported from ``gateway``, so
the dashboard installs on a laptop with ``pip install .[tui]``. The seam is httpx's
transport: ``ApiClient(..., transport=httpx.MockTransport(handler))`` replays recorded
answers (the snapshot tests do); everything else talks to a real API.

Two kinds of failure, because the dashboard treats them differently:

* ``Unreachable``: no answer (connection refused, timeout, a 5xx from a proxy): the
  status bar says so and the client retries with backoff;
* ``ApiError``: the API answered and refused (401, 403, 404, 409, 422, or a 503 of one
  route such as ``/cluster`` without a log): shown as a message, nothing to retry.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError", "SseEvent", "SseParser", "Unreachable"]

log = logging.getLogger("vigil.tui")


class Unreachable(Exception):
    """The API did not answer."""


class ApiError(Exception):
    """The API answered with an error body (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class SseEvent:
    id: int | None
    event: str
    data: str


class SseParser:
    """Server-Sent Events, one line at a time (the pure core of the stream)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r")
        if line == "":
            if not self._data:
                self._fields = {}
                return None
            raw_id = self._fields.get("id", "").strip()
            ev = SseEvent(int(raw_id) if raw_id.isdigit() else None,
                          self._fields.get("event", "message"), "\n".join(self._data))
            self._fields, self._data = {}, []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None


def _message(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
        err = body.get("error") or {}
        return str(err.get("message") or resp.reason_phrase), str(err.get("code") or "")
    except (ValueError, AttributeError):
        return resp.reason_phrase or "error", ""


class ApiClient:
    """``GET``/``POST`` on the API with a bearer token; pages are followed to the end."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport,
                                       headers={"Authorization": f"Bearer {token}"},
                                       timeout=httpx.Timeout(timeout, read=timeout))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(_describe(exc)) from exc
        if resp.status_code in (502, 504) or (resp.status_code == 503 and path == "/healthz"):
            raise Unreachable(f"{resp.status_code} {resp.reason_phrase}")
        if resp.status_code >= 400:
            message, code = _message(resp)
            raise ApiError(resp.status_code, message, code)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def _pages(self, path: str, params: list[tuple[str, str]],
                     max_items: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            q = list(params) + ([("cursor", cursor)] if cursor else [])
            page = await self._request("GET", path, params=q)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or len(items) >= max_items:
                return items[:max_items]

    async def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/healthz")
        return result

    async def devices(self, kind: str | None = None, max_items: int = 100_000) -> list[dict[str, Any]]:
        params = [("limit", "1000")] + ([("kind", kind)] if kind else [])
        return await self._pages("/devices", params, max_items)

    async def alerts(self, states: Iterable[str] = (), device: str | None = None,
                     max_items: int = 5000) -> list[dict[str, Any]]:
        params = [("limit", "1000")] + [("state", s) for s in states]
        if device:
            params.append(("device", device))
        return await self._pages("/alerts", params, max_items)

    async def cluster(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/cluster")
        return result

    async def act(self, alert_id: str, action: str, comment: str | None = None) -> dict[str, Any]:
        """``action`` is ack, unack or resolve; returns the alert as it is now."""
        if action not in ("ack", "unack", "resolve"):
            raise ValueError(f"unknown action {action!r}")
        body = {"comment": comment} if comment else {}
        result: dict[str, Any] = await self._request("POST", f"/alerts/{alert_id}/{action}", json=body)
        return result

    async def silence(self, rule: str, device: str, duration_s: int,
                      comment: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"rule": rule, "device": device, "duration_s": duration_s}
        if comment:
            body["comment"] = comment
        result: dict[str, Any] = await self._request("POST", "/silences", json=body)
        return result

    async def stream(self, last_event_id: int | None, silence_s: float = 60.0) -> AsyncIterator[SseEvent]:
        """``GET /alerts/stream`` from after ``last_event_id`` (the newest change when None).
        Ends when the server closes the stream; raises ``Unreachable`` when it breaks or
        stays silent for ``silence_s`` (the API sends keepalives every 15 s by default, so
        a silent stream is a dead connection)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        parser = SseParser()
        try:
            async with self._http.stream("GET", "/alerts/stream", headers=headers,
                                         timeout=httpx.Timeout(10.0, read=silence_s)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    if resp.status_code in (502, 503, 504):
                        raise Unreachable(f"{resp.status_code} {resp.reason_phrase}")
                    message, code = _message(resp)
                    raise ApiError(resp.status_code, message, code)
                async for line in resp.aiter_lines():
                    ev = parser.feed(line)
                    if ev is not None:
                        yield ev
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise Unreachable(_describe(exc)) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect: {exc}" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
