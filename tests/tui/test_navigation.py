"""Keyboard first, mouse works: screens by key, by the command palette and by clicking a
tab; a row opens by click; ``vigil dash`` explains a missing token."""

from __future__ import annotations

import pytest

from deploy.cli import build_parser, main
from tests.tui.conftest import Api, Served, dash, until, vehicle
from tui.table import KeyedTable
from tui.views import DeviceDetail

pytestmark = pytest.mark.anyio


async def test_keys_palette_and_mouse(api: Api, served: Served) -> None:
    api.feed(vehicle("truck-1", 10.0), vehicle("truck-2", 5.0), topic="device-state")
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.polls >= 1, "the first poll")
        await pilot.press("5")
        assert app.active_pane == "cluster"
        # the command palette
        await pilot.press("ctrl+p", *"show vehicles")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.active_pane == "vehicles", "the palette's command")
        # the mouse: a tab, then a row
        await pilot.click("#--content-tab-patients")
        assert app.active_pane == "patients"
        await pilot.click("#--content-tab-vehicles")
        table = app.query_one("#vehicle-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 2, "the rows")
        await pilot.click(table, offset=(3, 2))  # the second row (under the header)
        await pilot.click(table, offset=(3, 2))  # a click on the selected row opens it
        await until(pilot, lambda: isinstance(app.screen, DeviceDetail), "the detail view")
        assert isinstance(app.screen, DeviceDetail) and app.screen.device_id == "truck-2"


def test_vigil_dash_needs_a_token(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VIGIL_TOKEN", raising=False)
    assert main(["dash", "--api", "http://127.0.0.1:9"]) == 2
    assert "no token: pass --token or set VIGIL_TOKEN" in capsys.readouterr().err
    args = build_parser().parse_args(["dash"])
    assert args.api == "http://127.0.0.1:8000" and args.token is None


async def test_a_screen_key_leaves_the_detail_view(api: Api, served: Served) -> None:
    api.feed(vehicle("truck-1", 10.0), topic="device-state")
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("2")
        table = app.query_one("#vehicle-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 1, "the row")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DeviceDetail), "the detail view")
        await pilot.press("slash")  # nothing to filter here: the detail view stays
        assert isinstance(app.screen, DeviceDetail)
        await pilot.press("4")
        assert not isinstance(app.screen, DeviceDetail) and app.active_pane == "alerts"
