"""Silences (matching by rule and device, exact or glob, with a start and an end) and the
device view (device-state and device-status merged)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.store import alert_id_for
from tests.api.conftest import Api, transition

pytestmark = pytest.mark.anyio


def now() -> int:
    return int(time.time() * 1000)


async def alert(client: httpx.AsyncClient, fingerprint: str) -> dict[str, Any]:
    r = await client.get(f"/alerts/{alert_id_for(fingerprint)}")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


async def test_silences_mark_matching_alerts(api: Api, client: httpx.AsyncClient) -> None:
    t = now()
    api.feed(transition("geofence:depot", "truck-1", ts=t - 5000),
             transition("geofence:yard", "truck-2", ts=t - 5000),
             transition("overspeed", "truck-1", ts=t - 5000))
    r = await client.post("/silences", json={"rule": "geofence:*", "device": "truck-1",
                                             "duration_s": 3600, "comment": "depot works"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] is True and silence["created_by"] == "admin"
    assert silence["ends_at"].endswith("Z")
    assert (await alert(client, "geofence:depot|truck-1"))["silenced"] is True
    assert (await alert(client, "geofence:yard|truck-2"))["silenced"] is False
    assert (await alert(client, "overspeed|truck-1"))["silenced"] is False
    # still stored and listed, and its history says when it was silenced
    depot = await alert(client, "geofence:depot|truck-1")
    assert depot["state"] == "firing" and depot["history"][-1]["kind"] == "silenced"

    # a new alert that matches (by its event time) arrives silenced
    api.feed(transition("geofence:gate", "truck-1", ts=now() + 1000))
    assert (await alert(client, "geofence:gate|truck-1"))["silenced"] is True

    assert [s["id"] for s in (await client.get("/silences")).json()] == [silence["id"]]
    assert (await client.delete(f"/silences/{silence['id']}")).status_code == 204
    assert (await alert(client, "geofence:depot|truck-1"))["silenced"] is False
    assert (await alert(client, "geofence:depot|truck-1"))["history"][-1]["kind"] == "unsilenced"
    assert (await client.get("/silences")).json() == []
    assert (await client.delete(f"/silences/{silence['id']}")).status_code == 404


async def test_a_silence_counts_only_between_its_start_and_end(api: Api, client: httpx.AsyncClient) -> None:
    t = now()
    r = await client.post("/silences", json={"rule": "idling", "device": "*",
                                             "starts_at": "2020-01-01T00:00:00Z",
                                             "ends_at": "2020-01-01T01:00:00+00:00"})
    assert r.status_code == 201 and r.json()["active"] is False
    api.feed(transition("idling", "truck-5", ts=t))
    assert (await alert(client, "idling|truck-5"))["silenced"] is False
    # an alert whose transition falls inside the window is silenced
    api.feed(transition("idling", "truck-6", ts=1577837400000))  # 2020-01-01T00:10:00Z
    a = await alert(client, "idling|truck-6")
    assert a["silenced"] is False and a["silence_id"] is None  # ... but the silence is over now
    assert (await client.get("/silences")).json() == []
    assert len((await client.get("/silences", params={"include_expired": True})).json()) == 1
    # an active silence covers an alert that fired before it was made
    an_hour_ago = datetime.fromtimestamp(t / 1000 - 3600, tz=UTC).isoformat()
    r = await client.post("/silences", json={"rule": "idling", "device": "truck-5",
                                             "starts_at": an_hour_ago, "duration_s": 7200})
    assert r.status_code == 201 and r.json()["active"] is True
    a = await alert(client, "idling|truck-5")
    assert a["silenced"] is True and a["silence_id"] == r.json()["id"]


async def test_silence_requests_are_checked(client: httpx.AsyncClient) -> None:
    # not what the document says: 422
    for body in ({"rule": "x", "ends_at": "2026-01-01T00:00:00"}, {"rule": "x", "duration_s": 0},
                 {"rule": "x", "ends_at": 1767225600}, {"rule": "x", "duration_s": 60, "color": "red"}):
        r = await client.post("/silences", json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["message"]
    # values that do not make a silence together: 400
    for body, message in (({"rule": "x"}, "give ends_at or duration_s"),
                          ({"rule": "x", "starts_at": "2026-01-02T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"},
                           "ends_at must be later than starts_at")):
        r = await client.post("/silences", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["message"] == message


def device_records(api: Api) -> None:
    t = now()
    api.feed({"device": "truck-7", "kind": "vehicle", "ts": t - 2000,
              "latest": {"lat": 48.1, "lon": 11.5, "speed": 12.5, "ignition": True}, "news2": None,
              "window": {"start": t - 12000, "end": t - 2000, "count": 10, "mean_speed": 11.0},
              "alerts": ["overspeed|truck-7"]}, topic="device-state")
    api.feed({"device": "bed-4", "kind": "patient", "ts": t - 1000,
              "latest": {"heart_rate": 121, "spo2": 91, "resp_rate": 24, "temp_c": 38.4, "sys_bp": 99,
                         "dia_bp": 60, "on_oxygen": False, "consciousness": "A", "probe_off": False},
              "news2": {"total": 8, "risk": "high", "scores": {"spo2": 2}, "missing": []},
              "window": {"start": t - 11000, "end": t - 1000, "count": 10}, "alerts": []},
             topic="device-state")
    api.feed({"device": "truck-7", "state": "online", "version": "0.1.0", "outbox_depth": 3,
              "outbox_bytes": 512, "dropped": 1, "ts": t - 500, "received": t - 400},
             {"device": "bed-4", "state": "offline", "version": "0.1.0", "outbox_depth": 0,
              "outbox_bytes": 0, "dropped": 0, "ts": 0, "received": t - 100},
             {"device": "pi-9", "state": "online", "version": "0.2.0", "outbox_depth": 0,
              "outbox_bytes": 0, "dropped": 0, "ts": t, "received": t}, topic="device-status")


async def test_devices_merge_state_and_status(api: Api, client: httpx.AsyncClient) -> None:
    device_records(api)
    truck = (await client.get("/devices/truck-7")).json()
    assert truck["kind"] == "vehicle" and truck["status"] == "online"
    assert truck["position"] == {"lat": 48.1, "lon": 11.5, "speed": 12.5, "ignition": True}
    assert truck["outbox_depth"] == 3 and truck["dropped"] == 1 and truck["version"] == "0.1.0"
    assert truck["active_alerts"] == ["overspeed|truck-7"] and truck["last_seen"].endswith("Z")
    bed = (await client.get("/devices/bed-4")).json()
    assert bed["status"] == "offline" and bed["news2"]["risk"] == "high" and bed["vitals"]["spo2"] == 91
    assert bed["position"] is None
    assert [d["id"] for d in (await client.get("/devices")).json()["items"]] == ["bed-4", "pi-9", "truck-7"]
    assert [d["id"] for d in (await client.get("/devices", params={"status": "online"})).json()["items"]] == [
        "pi-9", "truck-7"]
    assert [d["id"] for d in (await client.get("/devices", params={"kind": "patient"})).json()["items"]] == [
        "bed-4"]
    page = (await client.get("/devices", params={"limit": 2})).json()
    rest = (await client.get("/devices", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == ["bed-4", "pi-9", "truck-7"]
    assert rest["next_cursor"] is None
    assert (await client.get("/devices/nope")).status_code == 404
    # the processors forget a device (tombstone): its status stays
    api.feed(None, topic="device-state", key="truck-7")
    truck = (await client.get("/devices/truck-7")).json()
    assert truck["position"] is None and truck["status"] == "online"
