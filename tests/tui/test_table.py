"""KeyedTable on its own: rows keyed, patched in place, reordered without being removed or
added, the cursor staying on its row, the query hiding rows."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from tui.table import KeyedTable

pytestmark = pytest.mark.anyio

COLUMNS = (("name", "Name"), ("value", "Value"))


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, sort_reverse=True)


async def test_patch_reorder_and_query() -> None:
    app = One()
    async with app.run_test() as pilot:
        t = app.query_one(KeyedTable)
        t.sync({"a": ("a", "1"), "b": ("b", "2"), "c": ("c", "3")}, order={"a": 1, "b": 2, "c": 3})
        assert t.shown_keys == ["c", "b", "a"]
        t.move_cursor(row=t.get_row_index("a"))
        # "a" changes and becomes the newest: patched, moved to the top, cursor follows it
        t.sync({"a": ("a", "10"), "b": ("b", "2"), "c": ("c", "3")}, order={"a": 4, "b": 2, "c": 3})
        await pilot.pause()
        assert t.shown_keys == ["a", "c", "b"] and t.get_cell("a", "value") == "10"
        assert t.selected_key == "a"
        assert (t.rows_added, t.rows_removed, t.cells_updated) == (3, 0, 1)
        # a query hides rows (removes them from the table) and brings them back in order
        t.set_query("c")
        t.sync({"a": ("a", "10"), "b": ("b", "2"), "c": ("c", "3")}, order={"a": 4, "b": 2, "c": 3})
        assert t.shown_keys == ["c"]
        t.set_query("")
        t.sync({"a": ("a", "10"), "b": ("b", "2"), "c": ("c", "3")}, order={"a": 4, "b": 2, "c": 3})
        assert t.shown_keys == ["a", "c", "b"]
        # a key that is gone is removed; nothing else is touched
        t.sync({"a": ("a", "10"), "c": ("c", "3")}, order={"a": 4, "c": 3})
        assert t.shown_keys == ["a", "c"] and t.rows_removed == 3
