"""When the API goes away the dashboard says so and how stale its data is, backs off, and
reconnects by itself: the poll and the alert stream (resumed with Last-Event-ID, so the
alert raised meanwhile shows up once)."""

from __future__ import annotations

from functools import partial

import pytest

from gateway.store import alert_id_for
from tests.tui.conftest import T0, Api, Served, dash, manual, status, transition, until, vehicle
from tui import VigilDash
from tui.table import KeyedTable

pytestmark = pytest.mark.anyio


def grew(app: VigilDash, polls: int) -> bool:
    return app.polls > polls


def status_text(app: VigilDash) -> str:
    return str(app.status_bar.render())


async def test_unreachable_api_is_reported_with_staleness_then_reconnects(api: Api) -> None:
    api.feed(vehicle("truck-1", 10.0), topic="device-state")
    api.feed(status("truck-1"), topic="device-status")
    api.feed(transition("overspeed", "truck-1"))
    served = Served(api.app, lifespan="off").start()
    app = dash(served.url, api.tokens["read"])
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("4")
            alerts = app.query_one("#alerts-table", KeyedTable)
            await until(pilot, lambda: alerts.row_count == 1 and app.state.stream_live, "connected")
            assert status_text(app).startswith("● connected") and "data 0 s old" in status_text(app)
            assert not app.query_one("#status").has_class("-down")

            served.stop()
            await until(pilot, lambda: not app.state.stream_live, "the stream to drop")
            polls = app.polls
            manual(app).advance(2)
            await until(pilot, lambda: app.polls > polls, "a failed poll")
            assert "✖ API unreachable (connection refused)" in status_text(app)
            assert "data 2 s old" in status_text(app)
            assert app.query_one("#status").has_class("-down")
            # it backs off: 1, 2, 4 ... seconds between attempts; the age keeps growing
            for step in (1, 2, 4, 8):
                polls = app.polls
                manual(app).advance(step)
                await until(pilot, partial(grew, app, polls), "a retry")
            manual(app).advance(25)
            await until(pilot, lambda: "data 42 s old" in status_text(app), "the age to show")
            assert app.state.failures >= 5 and "retrying in" in status_text(app)
            # the rows are still there, as they were
            await pilot.press("2")
            assert app.query_one("#vehicle-table", KeyedTable).shown_keys == ["truck-1"]

            # meanwhile a new alert; then the API comes back on the same address
            api.feed(transition("fix_lost", "truck-1", severity="minor", ts=T0 + 5))
            served.start()
            connections = app.stream_connections
            manual(app).advance(30)
            await until(pilot, lambda: "● connected" in status_text(app), "the reconnection")
            assert "data 0 s old" in status_text(app)
            await until(pilot, lambda: app.stream_connections > connections, "the stream back")
            await pilot.press("4")
            lost = alert_id_for("fix_lost|truck-1")
            await until(pilot, lambda: lost in alerts.shown_keys, "the alert raised meanwhile")
            assert alerts.row_count == 2
    finally:
        served.stop()


async def test_a_refused_token_is_an_api_error_not_an_outage(api: Api, served: Served) -> None:
    app = dash(served.url, "vgl_not_a_token")
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.polls >= 1, "the first poll")
        text = status_text(app)
        assert "✖ API error (401 unknown or revoked token)" in text and "no data yet" in text
