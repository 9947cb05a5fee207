"""GET /alerts/stream through uvicorn on loopback: Server-Sent Events with change numbers
as ids, resumed with Last-Event-ID after a dropped connection, with no gap and no repeat."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.store import alert_id_for
from tests.api.conftest import T0, Api, Server, make_api, transition


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, Server]]:
    api = make_api(tmp_path, keepalive_s=0.3)
    try:
        with Server(api.app) as server:
            yield api, server
    finally:
        api.db.close()


class Events:
    """Reads one SSE connection: events as (id, event, data), skipping comments."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines

    def next(self) -> tuple[int, str, dict[str, Any]]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if "data" in fields:
                    return int(fields["id"]), fields["event"], orjson.loads(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    def take(self, n: int) -> list[tuple[int, str, dict[str, Any]]]:
        return [self.next() for _ in range(n)]


def stream(client: httpx.Client, api: Api, last_event_id: int | None = None, **params: Any) -> Any:
    headers = api.auth("read")
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return client.stream("GET", "/alerts/stream", headers=headers, params=params)


def test_resume_after_a_dropped_connection(served: tuple[Api, Server]) -> None:
    api, server = served
    api.feed(transition("overspeed", "truck-0"))  # before anyone listens: not sent to a new client
    with httpx.Client(base_url=server.url, timeout=10) as client:
        with stream(client, api) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = Events(r.iter_lines())
            api.feed(transition("overspeed", "truck-1", ts=T0 + 1),
                     transition("news2", "bed-4", kind="patient", severity="critical", ts=T0 + 2))
            got = events.take(2)
            assert [(i, e) for i, e, _ in got] == [(2, "fired"), (3, "fired")]
            assert got[1][2]["alert"]["device"] == "bed-4" and got[1][2]["alert"]["severity"] == "critical"
            assert got[1][2]["at"].endswith("Z")
            # nothing happens for a while: keepalive comments keep the connection open
            keepalives = 0
            while keepalives < 2:
                keepalives += next(events.lines) == ": keepalive"
        # dropped. Meanwhile: an acknowledgement through the API and a new transition
        assert client.post(f"/alerts/{alert_id_for('news2|bed-4')}/ack", headers=api.auth("ack"),
                           json={"comment": "seen"}).status_code == 200
        api.feed(transition("overspeed", "truck-1", state="resolved", started=T0 + 1, ts=T0 + 9, revision=1))
        with stream(client, api, last_event_id=3) as r:
            events = Events(r.iter_lines())
            missed = events.take(2)
            assert [(i, e) for i, e, _ in missed] == [(4, "acknowledged"), (5, "resolved")]
            assert missed[0][2]["actor"] == "ack" and missed[0][2]["comment"] == "seen"
            assert missed[0][2]["alert"]["state"] == "acknowledged"
            api.feed(transition("idling", "truck-2", ts=T0 + 10))  # then the live ones
            assert [(i, e) for i, e, _ in events.take(1)] == [(6, "fired")]
        # after=0 replays the whole history; a filter applies to what is sent
        with stream(client, api, after=0, device_kind="patient") as r:
            assert [(i, e) for i, e, _ in Events(r.iter_lines()).take(2)] == [(3, "fired"), (4, "acknowledged")]
        # an id from before a rebuild (ahead of this store): a reset event, then live changes
        with stream(client, api, last_event_id=9999) as r:
            lines = r.iter_lines()
            while next(lines) != "event: reset":
                pass
            reset = orjson.loads(next(lines).removeprefix("data: "))
            assert reset["last_change"] == 6 and "reload" in reset["reason"]
            api.feed(transition("idling", "truck-8", ts=T0 + 11))
            assert [(i, e) for i, e, _ in Events(lines).take(1)] == [(7, "fired")]
        with stream(client, api, last_event_id="x") as r:  # type: ignore[arg-type]
            r.read()
            assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]["message"]


@pytest.mark.parametrize("window", [10_000, 16])
def test_reconnecting_readers_see_every_change_exactly_once_under_writes(tmp_path: Path, window: int) -> None:
    """With a small in-memory window the readers also fall behind it and catch up from the
    file."""
    api = make_api(tmp_path, keepalive_s=0.3, sse_window=window)
    with Server(api.app) as server:
        try:
            _read_while_writing(api, server)
        finally:
            api.db.close()


def _read_while_writing(api: Api, server: Server) -> None:
    total = 300

    def write() -> None:
        for i in range(total):
            api.feed(transition("overspeed", f"truck-{i % 40}", state="fired" if i < 40 else "updated",
                                started=T0, ts=T0 + i, revision=0 if i < 40 else i))

    writer = threading.Thread(target=write)
    received: list[int] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        last = 0
        connections = 0
        writer.start()
        while len(received) < total:
            connections += 1
            with stream(client, api, last_event_id=last) as r:  # dropped after every 37 events
                for change, _, data in Events(r.iter_lines()).take(min(37, total - len(received))):
                    assert data["change"] == change
                    received.append(change)
                    last = change
        writer.join()
    assert received == list(range(1, total + 1))
    assert connections >= total // 37
