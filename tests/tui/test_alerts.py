"""The Alerts screen through the real API: alerts live from the SSE stream, acknowledge,
resolve and silence with a comment (a modal), the state filter and search."""

from __future__ import annotations

import httpx
import pytest
from textual.widgets import Input

from gateway.store import alert_id_for
from tests.tui.conftest import T0, Api, Served, dash, transition, until
from tui.table import KeyedTable
from tui.views import ActionModal, AlertsPane

pytestmark = pytest.mark.anyio


async def api_get(served: Served, api: Api, path: str) -> object:
    async with httpx.AsyncClient(base_url=served.url, headers=api.auth("read")) as c:
        r = await c.get(path)
        r.raise_for_status()
        return r.json()


async def test_acknowledge_resolve_and_silence_reach_the_api(api: Api, served: Served) -> None:
    api.feed(transition("overspeed", "truck-7", severity="major"),
             transition("news2", "bed-4", kind="patient", severity="critical", ts=T0 + 1))
    app = dash(served.url, api.tokens["readack"])
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("4")
        table = app.query_one("#alerts-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 2, "the two firing alerts")
        await until(pilot, lambda: app.state.stream_live, "the alert stream")
        # a new alert arrives through the stream, without a poll (the clock stands still)
        api.feed(transition("geofence:depot", "truck-9", severity="minor", ts=T0 + 2))
        geo = alert_id_for("geofence:depot|truck-9")
        await until(pilot, lambda: geo in table.shown_keys, "the streamed alert")
        assert table.shown_keys[0] == geo  # newest change first
        assert table.get_cell(geo, "rule") == "geofence:depot"

        truck = alert_id_for("overspeed|truck-7")
        table.move_cursor(row=table.get_row_index(truck))
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ActionModal), "the comment modal")
        await pilot.press(*"on my way", "enter")
        await until(pilot, lambda: str(table.get_cell(truck, "state")) == "acknowledged", "ack shown")
        body = await api_get(served, api, f"/alerts/{truck}")
        assert isinstance(body, dict)
        assert body["state"] == "acknowledged"
        assert body["acknowledged"]["by"] == "readack" and body["acknowledged"]["comment"] == "on my way"
        assert table.get_cell(truck, "by") == "readack"

        # resolve by hand, with a comment
        table.move_cursor(row=table.get_row_index(truck))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ActionModal), "the comment modal")
        await pilot.press(*"false alarm", "enter")
        await until(pilot, lambda: truck not in table.shown_keys, "resolved leaves the active view")
        body = await api_get(served, api, f"/alerts/{truck}")
        assert isinstance(body, dict)
        assert body["state"] == "resolved" and body["resolved"]["comment"] == "false alarm"

        # silence bed-4's news2 for 30 minutes
        bed = alert_id_for("news2|bed-4")
        table.move_cursor(row=table.get_row_index(bed))
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ActionModal), "the silence modal")
        duration = app.screen.query_one("#duration", Input)
        duration.value = "30m"
        await pilot.press(*"night shift", "enter")

        async def silenced() -> object:
            return await api_get(served, api, "/silences")

        silences = await until(pilot, silenced, "the silence")
        assert isinstance(silences, list) and len(silences) == 1
        assert (silences[0]["rule"], silences[0]["device"], silences[0]["comment"]) == (
            "news2", "bed-4", "night shift")

        # the state filter: resolved alerts on request; search with /
        await pilot.press("f", "f", "f")
        assert app.query_one("#alerts-pane", AlertsPane).state_filter == "resolved"
        await until(pilot, lambda: table.shown_keys == [truck], "the resolved alert")
        await pilot.press("f")  # all
        await until(pilot, lambda: table.row_count == 3, "all alerts")
        await pilot.press("slash", *"bed")
        assert table.shown_keys == [bed]


async def test_a_refused_action_is_reported_and_changes_nothing(api: Api, served: Served) -> None:
    api.feed(transition("overspeed", "truck-7"))
    app = dash(served.url, api.tokens["read"])  # no ack scope
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("4")
        table = app.query_one("#alerts-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 1, "the alert")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ActionModal), "the modal")
        await pilot.press("enter")
        await until(pilot, lambda: any("refused" in str(n.message) for n in app._notifications),
                    "the refusal")
        body = await api_get(served, api, f"/alerts/{alert_id_for('overspeed|truck-7')}")
        assert isinstance(body, dict) and body["state"] == "firing"
