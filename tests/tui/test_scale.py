"""10,000 devices: a poll patches the cells that changed and never rebuilds the table
(counted, not timed)."""

from __future__ import annotations

import pytest

from tests.tui.conftest import Api, Served, dash, manual, until, vehicle
from tui.table import KeyedTable

pytestmark = pytest.mark.anyio

N = 10_000


def lat(i: int) -> float:
    return 48.0 + i / 100_000


async def test_ten_thousand_rows_are_patched_not_rebuilt(api: Api, served: Served) -> None:
    api.feed(*(vehicle(f"v{i:05d}", 10.0, lat=lat(i)) for i in range(N)), topic="device-state")
    app = dash(served.url, api.tokens["read"])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("2")
        table = app.query_one("#vehicle-table", KeyedTable)
        await until(pilot, lambda: table.row_count == N, "10,000 rows", timeout=60)
        assert (table.rows_added, table.rows_removed, table.cells_updated) == (N, 0, 0)
        assert table.shown_keys[:2] == ["v00000", "v00001"]

        # a quiet tick: nothing changed, nothing is touched
        polls = app.polls
        manual(app).advance(2)
        await until(pilot, lambda: app.polls > polls, "a quiet poll", timeout=60)
        assert (table.rows_added, table.rows_removed, table.cells_updated) == (N, 0, 0)

        # 100 vehicles change speed: 100 cells patched, the same 10,000 rows, the same keys
        changed = [f"v{i:05d}" for i in range(0, N, 100)]
        api.feed(*(vehicle(d, 20.0, lat=lat(int(d[1:]))) for d in changed), topic="device-state")
        polls = app.polls
        manual(app).advance(2)
        await until(pilot, lambda: app.polls > polls, "the next poll", timeout=60)
        assert table.row_count == N
        assert (table.rows_added, table.rows_removed, table.cells_updated) == (N, 0, 100)
        assert table.get_cell("v00100", "speed") == "72.0" and table.get_cell("v00101", "speed") == "36.0"
        assert table.get_row_index("v00100") == 100  # the row kept its place and its key
