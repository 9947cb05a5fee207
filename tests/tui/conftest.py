"""Fixtures for the dashboard's tests: the real API (``tests/api/conftest.py``'s app over a
real SQLite file, fed with records in the topics' contracts, or by a real broker) under
uvicorn on a loopback port, and the dashboard pointed at it with a manual clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import uvicorn
from fastapi import FastAPI
from textual.pilot import Pilot

from tests.api.conftest import T0, Api, make_api, transition
from tests.conftest import free_port, wait_for_port
from tui import ApiClient, ManualClock, VigilDash

__all__ = ["T0", "Api", "Served", "dash", "manual", "patient", "status", "transition", "until", "vehicle"]

START = T0 / 1000 + 5.0  # the manual clock's start: 5 s after the data's T0


class Served:
    """An app under uvicorn on a loopback port (which a test may stop and start again)."""

    def __init__(self, app: FastAPI, port: int | None = None,
                 lifespan: Literal["on", "off"] = "on") -> None:
        self.app = app
        self.port = port or free_port()
        self.lifespan = lifespan  # "off": stopping leaves the app's database open
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan=self.lifespan,
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
            self.server = self.thread = None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = make_api(tmp_path, keepalive_s=0.5)
    try:
        yield a
    finally:
        a.db.close()


@pytest.fixture
def served(api: Api) -> Iterator[Served]:
    s = Served(api.app).start()
    try:
        yield s
    finally:
        s.stop()


def dash(url: str, token: str, clock: ManualClock | None = None, interval: float = 2.0) -> VigilDash:
    return VigilDash(ApiClient(url, token), clock=clock or ManualClock(START), interval=interval)


def manual(app: VigilDash) -> ManualClock:
    """The app's clock, which the test moves."""
    assert isinstance(app.clock, ManualClock)
    return app.clock


async def until(pilot: Pilot[Any], predicate: Callable[[], Any], what: str = "condition",
                timeout: float = 15.0) -> Any:
    """Let the app run until ``predicate()`` holds (real time; no assertion on how long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- records in the topics' contracts ----------------------------------------------------


def vehicle(device: str, speed: float | None, lat: float = 48.1, lon: float = 11.5, ts: int = T0,
            alerts: list[str] | None = None) -> dict[str, Any]:
    """A ``device-state`` value of a vehicle (speed in m/s)."""
    return {"device": device, "kind": "vehicle", "ts": ts,
            "latest": {"lat": lat, "lon": lon, "speed": speed, "ignition": speed is not None},
            "news2": None,
            "window": {"start": ts - 10_000, "end": ts, "count": 10, "mean_speed": speed or 0.0,
                       "max_speed": speed or 0.0, "distance_m": (speed or 0.0) * 10},
            "alerts": alerts or []}


def patient(device: str, total: int, risk: str, *, hr: float = 80, spo2: float = 97, rr: float = 16,
            temp: float = 37.0, sys_bp: float = 120, dia_bp: float = 80, ts: int = T0,
            probe_off: bool = False, alerts: list[str] | None = None) -> dict[str, Any]:
    """A ``device-state`` value of a patient with its NEWS2."""
    return {"device": device, "kind": "patient", "ts": ts,
            "latest": {"heart_rate": hr, "spo2": spo2, "resp_rate": rr, "temp_c": temp,
                       "sys_bp": sys_bp, "dia_bp": dia_bp, "on_oxygen": False,
                       "consciousness": "A", "probe_off": probe_off},
            "news2": {"total": total, "risk": risk, "scores": {"heart_rate": 0}, "missing": []},
            "window": {"start": ts - 10_000, "end": ts, "count": 10}, "alerts": alerts or []}


def status(device: str, state: str = "online", ts: int = T0) -> dict[str, Any]:
    """A ``device-status`` value."""
    return {"device": device, "state": state, "version": "0.1.0", "outbox_depth": 0,
            "outbox_bytes": 0, "dropped": 0, "ts": ts, "received": ts}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
