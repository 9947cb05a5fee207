"""Webhooks through the served app: subscriptions over the API, signed deliveries to a
local receiver for the changes a filter selects (silenced alerts excluded), a retry after
a 503, and the delivery log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.store import alert_id_for
from gateway.webhooks import verify
from tests.api.conftest import Api, Server, make_api, now_ms, transition, wait_until


class Receiver:
    """An HTTP endpoint on loopback that records what it is sent; the first request for a
    device listed in ``fail_once`` gets a 503 with Retry-After: 0."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_once: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                device = orjson.loads(body)["alert"]["alert"]["device"]
                if device in receiver.fail_once:
                    receiver.fail_once.discard(device)
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def devices(self) -> list[tuple[str, str]]:
        out = []
        for _, body in self.requests:
            change = orjson.loads(body)["alert"]
            out.append((change["kind"], change["alert"]["device"]))
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, Server]]:
    api = make_api(tmp_path)
    try:
        with Server(api.app) as server:
            yield api, server
    finally:
        api.db.close()


def test_signed_deliveries_of_what_the_filter_selects(served: tuple[Api, Server], receiver: Receiver) -> None:
    api, server = served
    with httpx.Client(base_url=server.url, headers=api.auth("admin"), timeout=10) as c:
        r = c.post("/webhooks", json={"url": receiver.url, "filter": {"min_severity": "major"},
                                      "description": "pager"})
        assert r.status_code == 201, r.text
        hook = r.json()
        secret = hook["secret"]
        assert len(secret) >= 32
        assert c.get(f"/webhooks/{hook['id']}").json()["secret"] is None  # shown once
        assert c.post("/silences", json={"device": "truck-9", "duration_s": 600}).status_code == 201

        t = now_ms()
        receiver.fail_once.add("truck-3")
        api.feed(transition("overspeed", "truck-1", severity="major", ts=t),
                 transition("overspeed", "truck-9", severity="critical", ts=t),  # silenced
                 transition("overspeed", "truck-2", severity="minor", ts=t),  # below the filter
                 transition("overspeed", "truck-3", severity="critical", ts=t))  # 503 first
        assert c.post(f"/alerts/{alert_id_for('overspeed|truck-1')}/ack").status_code == 200

        wait_until(lambda: len(receiver.requests) == 3, what="three deliveries")
        assert sorted(receiver.devices()) == [("acknowledged", "truck-1"), ("fired", "truck-1"),
                                              ("fired", "truck-3")]
        for headers, body in receiver.requests:
            assert verify(secret, headers["x-vigil-timestamp"], body, headers["x-vigil-signature"])
            assert not verify("another-secret-of-enough-length", headers["x-vigil-timestamp"], body,
                              headers["x-vigil-signature"])
            change = orjson.loads(body)["alert"]
            assert change["alert"]["last_change_at"].endswith("Z")

        # the receiver answered; the dispatcher records the outcome right after
        wait_until(lambda: sorted(d["status"] for d in c.get(f"/webhooks/{hook['id']}/deliveries").json())
                   == ["delivered"] * 3, what="three deliveries logged as delivered")
        log = c.get(f"/webhooks/{hook['id']}/deliveries").json()
        retried = next(d for d in log if d["body"]["alert"]["alert"]["device"] == "truck-3")
        detail = c.get(f"/webhooks/deliveries/{retried['id']}").json()
        assert [(a["status_code"], a["outcome"]) for a in detail["log"]] == [(503, "retry"), (204, "delivered")]

        # disabled: nothing new is sent; deleted: gone
        assert c.patch(f"/webhooks/{hook['id']}", json={"enabled": False}).json()["enabled"] is False
        api.feed(transition("overspeed", "truck-4", severity="critical", ts=t + 1))
        assert len(c.get(f"/webhooks/{hook['id']}/deliveries").json()) == 3
        assert c.delete(f"/webhooks/{hook['id']}").status_code == 204
        assert c.get(f"/webhooks/{hook['id']}").status_code == 404
    assert len(receiver.requests) == 3


def test_webhook_requests_are_checked(served: tuple[Api, Server]) -> None:
    api, server = served
    with httpx.Client(base_url=server.url, headers=api.auth("admin"), timeout=10) as c:
        assert c.post("/webhooks", json={"url": "ftp://x"}).status_code == 422
        r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/x", "secret": "short"})
        assert r.status_code == 422 and "secret" in r.json()["error"]["message"]
        r = c.post("/webhooks", json={"url": "http://127.0.0.1:9/x", "filter": {"states": ["exploded"]}})
        assert r.status_code == 422
        assert c.get("/webhooks", headers=api.auth("readack")).status_code == 403
