"""Vehicles and patients through the real API: rows appear, are patched in place, NEWS2 is
coloured by its clinical response, ``/`` filters, Enter opens a device's detail."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.widgets import Sparkline

from tests.tui.conftest import (
    T0,
    Api,
    Served,
    dash,
    manual,
    patient,
    status,
    transition,
    until,
    vehicle,
)
from tui.model import cell_text
from tui.table import KeyedTable
from tui.views import DeviceDetail

pytestmark = pytest.mark.anyio


async def test_vehicle_rows_appear_and_are_patched_in_place(api: Api, served: Served) -> None:
    api.feed(vehicle("truck-1", 10.0), vehicle("truck-2", 20.0, lat=48.2, lon=11.6),
             topic="device-state")
    api.feed(status("truck-1"), status("truck-2", "offline"), topic="device-status")
    api.feed(transition("overspeed", "truck-1"), transition("fix_lost", "truck-1", ts=T0 + 1),
             transition("fix_lost", "truck-1", state="resolved", ts=T0 + 2, started=T0 + 1, revision=1),
             transition("overspeed", "truck-2", ts=T0 + 3))
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("2")
        table = app.query_one("#vehicle-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 2, "two vehicle rows")
        assert table.shown_keys == ["truck-1", "truck-2"]
        assert table.get_cell("truck-1", "speed") == "36.0"  # 10 m/s
        assert table.get_cell("truck-2", "position") == "48.20000, 11.60000"
        assert str(table.get_cell("truck-2", "status")) == "offline"
        table.move_cursor(row=1)
        # truck-1 speeds up; the next poll patches its cell, the row stays where it was
        api.feed(vehicle("truck-1", 30.0, ts=T0 + 1000), topic="device-state")
        polls = app.polls
        manual(app).advance(2)
        await until(pilot, lambda: app.polls > polls, "the next poll")
        assert table.get_cell("truck-1", "speed") == "108.0"
        assert table.row_count == 2 and table.shown_keys == ["truck-1", "truck-2"]
        assert table.rows_added == 2 and table.rows_removed == 0
        assert table.selected_key == "truck-2"  # the cursor did not move
        # a detail view with the speeds the dashboard has seen
        table.move_cursor(row=0)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceDetail), "the detail view")
        await pilot.pause()
        assert app.screen.query_one("#spark-speed", Sparkline).data == [36.0, 108.0]
        # its alerts, the resolved one too (fetched for the detail view), not truck-2's
        mine = app.screen.query_one("#detail-alerts", KeyedTable)
        await until(pilot, lambda: mine.row_count == 2, "truck-1's two alerts")
        assert sorted(str(mine.get_cell(k, "state")) for k in mine.shown_keys) == ["firing", "resolved"]
        await pilot.press("escape")
        assert not isinstance(app.screen, DeviceDetail)


async def test_news2_is_coloured_by_response_level(api: Api, served: Served) -> None:
    api.feed(patient("bed-1", 0, "low"), patient("bed-2", 3, "low-medium"),
             patient("bed-3", 5, "medium", hr=112), patient("bed-4", 8, "high", spo2=89),
             topic="device-state")
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("3")
        table = app.query_one("#patient-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 4, "four patient rows")
        cells = {k: table.get_cell(k, "news2") for k in table.shown_keys}
        assert all(isinstance(c, Text) for c in cells.values())
        assert {k: (cell_text(c), str(getattr(c, "style", ""))) for k, c in cells.items()} == {
            "bed-1": ("0 low", "green"), "bed-2": ("3 low-medium", "#ffbf00"),
            "bed-3": ("5 medium", "#ffbf00"), "bed-4": ("8 high", "bold red")}
        assert table.get_cell("bed-4", "spo2") == "89"
        # bed-1 deteriorates: the same row turns red
        api.feed(patient("bed-1", 7, "high", ts=T0 + 1000, rr=26), topic="device-state")
        polls = app.polls
        manual(app).advance(2)
        await until(pilot, lambda: app.polls > polls, "the next poll")
        cell = table.get_cell("bed-1", "news2")
        assert cell == Text("7 high", style="bold red")
        assert table.get_cell("bed-1", "rr") == "26"
        assert table.row_count == 4 and table.rows_added == 4 and table.rows_removed == 0


async def test_slash_filters_the_rows(api: Api, served: Served) -> None:
    api.feed(*(vehicle(f"truck-{i}", float(i)) for i in range(5)), vehicle("van-9", 3.0),
             topic="device-state")
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("2")
        table = app.query_one("#vehicle-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 6, "six rows")
        await pilot.press("slash", "v", "a", "n")
        assert table.shown_keys == ["van-9"]
        await pilot.press("enter")  # keeps the filter, back in the table
        assert table.has_focus and table.shown_keys == ["van-9"]
        polls = app.polls
        manual(app).advance(2)
        await until(pilot, lambda: app.polls > polls, "the next poll")
        assert table.shown_keys == ["van-9"]  # the filter holds across polls
        await pilot.press("slash", "escape")  # clears it
        assert table.shown_keys == [f"truck-{i}" for i in range(5)] + ["van-9"]
