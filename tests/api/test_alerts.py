"""GET /alerts, /alerts/{id} and the acknowledgement lifecycle, through the real app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.store import alert_id_for
from tests.api.conftest import T0, Api, transition

pytestmark = pytest.mark.anyio

S = 1000  # ms


async def ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    r = await client.get("/alerts", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return [a["fingerprint"] for a in r.json()["items"]]


def fleet(api: Api) -> None:
    api.feed(
        transition("overspeed", "truck-1", severity="major", ts=T0),
        transition("overspeed", "truck-2", severity="minor", ts=T0 + 1 * S),
        transition("geofence:depot", "truck-1", severity="info", ts=T0 + 2 * S),
        transition("geofence:yard", "truck-3", severity="minor", ts=T0 + 3 * S),
        transition("news2", "bed-4", severity="critical", kind="patient", ts=T0 + 4 * S),
        transition("threshold:spo2_low", "bed-5", severity="major", kind="patient", ts=T0 + 5 * S),
        transition("idling", "truck-2", state="resolved", revision=1, severity="info", started=T0 - 60 * S, ts=T0 + 6 * S),
    )


async def test_filters_select_what_they_say(api: Api, client: httpx.AsyncClient) -> None:
    fleet(api)
    everything = await ids(client)
    assert everything[0] == "idling|truck-2" and everything[-1] == "overspeed|truck-1"  # newest first
    assert len(everything) == 7
    assert await ids(client, state="resolved") == ["idling|truck-2"]
    assert len(await ids(client, state="firing")) == 6
    assert await ids(client, severity=["critical", "major"]) == [
        "threshold:spo2_low|bed-5", "news2|bed-4", "overspeed|truck-1"]
    assert await ids(client, min_severity="major") == await ids(client, severity=["critical", "major"])
    assert await ids(client, rule="geofence:*") == ["geofence:yard|truck-3", "geofence:depot|truck-1"]
    assert await ids(client, rule=["overspeed", "news2"]) == ["news2|bed-4", "overspeed|truck-2",
                                                              "overspeed|truck-1"]
    assert await ids(client, device="truck-1") == ["geofence:depot|truck-1", "overspeed|truck-1"]
    assert await ids(client, device="bed-*", device_kind="patient") == ["threshold:spo2_low|bed-5",
                                                                        "news2|bed-4"]
    assert await ids(client, device_kind="vehicle", state="firing", severity="minor") == [
        "geofence:yard|truck-3", "overspeed|truck-2"]
    assert await ids(client, since="2026-09-21T14:13:22Z", until="2026-09-21T16:13:25+02:00") == [
        "news2|bed-4", "geofence:yard|truck-3", "geofence:depot|truck-1"]


async def test_time_filters_refuse_naive_times(client: httpx.AsyncClient) -> None:
    r = await client.get("/alerts", params={"since": "2026-09-21T13:33:22"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
    assert "timezone" in r.json()["error"]["message"]
    r = await client.get("/alerts", params={"since": "2026-09-21T14:00:00Z", "until": "2026-09-21T13:00:00Z"})
    assert r.status_code == 400 and "later" in r.json()["error"]["message"]


async def test_every_timestamp_is_utc_with_a_zone(api: Api, client: httpx.AsyncClient) -> None:
    fleet(api)
    a = (await client.get("/alerts", params={"limit": 1})).json()["items"][0]
    for name in ("started_at", "last_transition_at", "last_change_at"):
        assert a[name].endswith("Z"), a[name]
    assert a["started_at"] == "2026-09-21T14:12:20Z"  # T0 - 60 s: the episode's start
    assert a["resolved"]["at"] == "2026-09-21T14:13:26Z"


async def test_pages_neither_repeat_nor_skip_while_alerts_arrive(api: Api, client: httpx.AsyncClient) -> None:
    api.feed(*(transition("overspeed", f"truck-{i:03}", ts=T0 + (i // 3) * S) for i in range(50)))
    seen: list[str] = []
    cursor = None
    page = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/alerts", params=params)).json()
        seen += [a["device"] for a in body["items"]]
        cursor = body["next_cursor"]
        # meanwhile: new alerts arrive (newer than everything) and an old one is updated
        page += 1
        api.feed(transition("harsh_braking", f"truck-new-{page}", ts=T0 + 100 * S + page))
        if cursor is None:
            break
    originals = [d for d in seen if not d.startswith("truck-new")]
    assert len(originals) == len(set(originals)) == 50  # every original alert exactly once
    assert not [d for d in seen if d.startswith("truck-new")]  # arrivals wait for the next poll
    # on a fresh first page the arrivals lead
    assert (await ids(client, limit=1))[0].startswith("harsh_braking|truck-new")


async def test_a_bad_cursor_is_refused_clearly(client: httpx.AsyncClient) -> None:
    for bad in ("nonsense", "WzEsMl0", "!!"):
        r = await client.get("/alerts", params={"cursor": bad})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_cursor"


async def test_ack_lifecycle(api: Api, client: httpx.AsyncClient) -> None:
    api.feed(transition("news2", "bed-4", severity="major", kind="patient"))
    aid = alert_id_for("news2|bed-4")
    r = await client.post(f"/alerts/{aid}/ack", json={"by": "nurse-ann", "comment": "on my way"})
    assert r.status_code == 200
    assert r.json()["state"] == "acknowledged"
    assert r.json()["acknowledged"]["by"] == "nurse-ann (token admin)"  # the audit keeps both
    assert r.json()["acknowledged"]["comment"] == "on my way"
    assert await ids(client, state="acknowledged") == ["news2|bed-4"]

    # an update at the same severity keeps the acknowledgement
    api.feed(transition("news2", "bed-4", state="updated", severity="major", kind="patient",
                        started=T0, ts=T0 + 10 * S, revision=1))
    assert (await client.get(f"/alerts/{aid}")).json()["state"] == "acknowledged"
    # a rise in severity pages again
    api.feed(transition("news2", "bed-4", state="updated", severity="critical", kind="patient",
                        started=T0, ts=T0 + 20 * S, revision=2))
    a = (await client.get(f"/alerts/{aid}")).json()
    assert a["state"] == "firing" and a["severity"] == "critical" and a["acknowledged"] is None

    r = await client.post(f"/alerts/{aid}/ack", headers=api.auth("readack"))
    assert r.json()["acknowledged"]["by"] == "readack"  # default: the token's name
    r = await client.post(f"/alerts/{aid}/unack", json={"comment": "handing over"})
    assert r.status_code == 200 and r.json()["state"] == "firing"

    # the processors resolve it; acknowledging it now is a conflict
    api.feed(transition("news2", "bed-4", state="resolved", severity="critical", kind="patient",
                        started=T0, ts=T0 + 30 * S, revision=3))
    r = await client.post(f"/alerts/{aid}/ack")
    assert r.status_code == 409
    assert "resolved" in r.json()["error"]["message"]

    history = (await client.get(f"/alerts/{aid}")).json()["history"]
    assert [h["kind"] for h in history] == ["fired", "acknowledged", "updated", "unacknowledged", "updated",
                                            "acknowledged", "unacknowledged", "resolved"]
    assert history[3]["source"] == "escalation" and "major to critical" in history[3]["comment"]
    assert history[1]["actor"] == "nurse-ann (token admin)"
    assert [h["change"] for h in history] == sorted(h["change"] for h in history)

    # a new episode of the same condition starts unacknowledged
    api.feed(transition("news2", "bed-4", severity="minor", kind="patient", ts=T0 + 90 * S))
    a = (await client.get(f"/alerts/{aid}")).json()
    assert a["state"] == "firing" and a["revision"] == 0 and a["started_at"] == "2026-09-21T14:14:50Z"
    assert a["history"][-1]["kind"] == "fired"


async def test_manual_resolve_closes_the_episode(api: Api, client: httpx.AsyncClient) -> None:
    api.feed(transition("offline", "truck-9", severity="minor"))
    aid = alert_id_for("offline|truck-9")
    r = await client.post(f"/alerts/{aid}/resolve", json={"comment": "truck sold"})
    assert r.status_code == 200
    assert r.json()["state"] == "resolved" and r.json()["resolved"]["by"] == "admin"
    # a later update of that episode is recorded but does not reopen it
    api.feed(transition("offline", "truck-9", state="updated", severity="major", started=T0,
                        ts=T0 + 5 * S, revision=1))
    a = (await client.get(f"/alerts/{aid}")).json()
    assert a["state"] == "resolved" and a["history"][-1]["kind"] == "updated"
    assert (await client.post(f"/alerts/{aid}/resolve")).status_code == 200  # idempotent


async def test_unknown_alert_is_404(client: httpx.AsyncClient) -> None:
    for r in (await client.get("/alerts/nope"), await client.post("/alerts/nope/ack")):
        assert r.status_code == 404
        assert r.json()["error"] == {"code": "not_found", "message": "no alert nope", "details": None}


async def test_duplicates_and_replays_change_nothing(api: Api, client: httpx.AsyncClient) -> None:
    fired = transition("overspeed", "truck-1")
    updated = transition("overspeed", "truck-1", state="updated", started=T0, ts=T0 + S, revision=1,
                         severity="critical")
    assert api.feed(fired, updated) == 2
    before = (await client.get(f"/alerts/{alert_id_for('overspeed|truck-1')}")).json()
    assert api.feed(fired, updated, fired) == 0  # at-least-once copies: dropped
    after = (await client.get(f"/alerts/{alert_id_for('overspeed|truck-1')}")).json()
    assert after == before and after["severity"] == "critical"


async def test_bulk_ack_by_filter(api: Api, client: httpx.AsyncClient) -> None:
    fleet(api)
    r = await client.post("/alerts/ack", json={"device_kind": ["vehicle"], "severity": ["minor"],
                                               "comment": "known roadworks"})
    assert r.status_code == 200
    assert r.json()["acknowledged"] == 2
    assert sorted(await ids(client, state="acknowledged")) == ["geofence:yard|truck-3", "overspeed|truck-2"]
    # an empty filter acknowledges nothing, unless all=true
    assert (await client.post("/alerts/ack", json={})).json()["acknowledged"] == 0
    assert (await client.post("/alerts/ack", json={"all": True})).json()["acknowledged"] == 4
    assert await ids(client, state="firing") == []


async def test_malformed_records_are_skipped(api: Api, client: httpx.AsyncClient) -> None:
    bad = transition("overspeed", "truck-1", severity="apocalyptic")
    api.feed(bad, {"not": "an alert"}, transition("overspeed", "truck-2"))
    assert await ids(client) == ["overspeed|truck-2"]
    assert api.db.stored_offsets() == {("alerts", 0): 3}  # the store moved past them
