"""Fixtures for the API tests: the real app over a real SQLite file, tokens of every scope,
an httpx client on the ASGI app, records in the ``alerts`` topic's contract, and a real
uvicorn server on loopback for the streaming tests."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from gateway.api import ApiSettings, create_app
from gateway.store import AlertDB, LogRecord
from tests.conftest import free_port, wait_for_port

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z, ms


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def transition(rule: str = "overspeed", subject: str = "truck-7", *, state: str = "fired",
               severity: str = "major", ts: int = T0, started: int | None = None, revision: int = 0,
               kind: str = "vehicle", message: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A value of the ``alerts`` topic (the processors' contract)."""
    return {"fingerprint": f"{rule}|{subject}", "rule": rule, "subject": subject, "device_kind": kind,
            "state": state, "severity": severity, "ts": ts,
            "started": ts if started is None else started, "message": message or f"{rule} on {subject}",
            "details": details or {}, "revision": revision}


@dataclass
class Feed:
    """Feeds records to the store as its consumer would (offsets counted per topic)."""

    db: AlertDB
    offsets: dict[str, itertools.count[int]] = field(default_factory=dict)

    def __call__(self, *values: dict[str, Any] | None, topic: str = "alerts",
                 key: str | None = None) -> int:
        counter = self.offsets.setdefault(topic, itertools.count())
        records = []
        for v in values:
            k = key or (v or {}).get("fingerprint") or (v or {}).get("device")
            records.append(LogRecord(topic, 0, next(counter), k.encode() if k else None,
                                     None if v is None else orjson.dumps(v)))
        return self.db.ingest(records)


@dataclass
class Api:
    app: FastAPI
    db: AlertDB
    feed: Feed
    tokens: dict[str, str]

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def make_api(tmp_path: Path, **settings: Any) -> Api:
    app = create_app(ApiSettings(db_path=tmp_path / "alerts.db", **settings))
    db: AlertDB = app.state.db
    tokens = {}
    for name, scopes in {"read": ["read"], "ack": ["ack"], "readack": ["read", "ack"],
                         "admin": ["admin"]}.items():
        tokens[name], _ = app.state.tokens.create(name, scopes)
    return Api(app, db, Feed(db), tokens)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = make_api(tmp_path)
    try:
        yield a
    finally:
        a.db.close()


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app),
                                 base_url="http://vigil.test", headers=api.auth("admin")) as c:
        yield c


class Server:
    """The app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def now_ms() -> int:
    return int(time.time() * 1000)
