"""A DataTable whose rows are keyed (device id, alert id, topic/partition) and patched in
place: ``sync(rows)`` adds the new keys, ``update_cell``s only the cells that changed and
removes the keys that are gone. Nothing is cleared and rebuilt on a tick, so 10,000 rows
keep the cursor, the scroll position and the frame rate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.widgets import DataTable

try:  # what DataTable.sort itself rebuilds: reordering by our own key without touching rows
    from textual._two_way_dict import TwoWayDict
except ImportError:  # a Textual without it: sort by the first column instead
    TwoWayDict = None  # type: ignore[assignment,misc]

from tui.model import Cell, row_matches

__all__ = ["KeyedTable"]


class KeyedTable(DataTable[Cell]):
    """``sync`` with the full set of rows; ``query`` hides the rows it does not match."""

    def __init__(self, columns: Sequence[tuple[str, str]], *, sort_reverse: bool = False,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.column_spec = tuple(columns)
        self.sort_reverse = sort_reverse
        self._order: dict[str, Any] = {}  # the sort value of each shown row (default: its key)
        self.query_text = ""
        self._shown: dict[str, tuple[Cell, ...]] = {}  # what the table holds, by row key
        # how the table was changed, for the tests and for anyone curious
        self.rows_added = 0
        self.rows_removed = 0
        self.cells_updated = 0

    def on_mount(self) -> None:
        for key, label in self.column_spec:
            self.add_column(label, key=key)

    def set_query(self, text: str) -> None:
        self.query_text = text

    def sync(self, rows: Mapping[str, Sequence[Cell]], changed: set[str] | None = None,
             order: Mapping[str, Any] | None = None) -> None:
        """Make the table show ``rows`` (those matching the query), ordered by ``order``'s
        values (default: by key). ``changed``, when given, names the only keys whose
        content may differ from the last sync (a fast path)."""
        keys = self.column_spec
        wanted = {k for k, r in rows.items() if row_matches(r, self.query_text)} \
            if self.query_text else set(rows)
        for gone in [k for k in self._shown if k not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
            self._order.pop(gone, None)
            self.rows_removed += 1
        reorder = False
        check = self._shown.keys() & wanted if changed is None else self._shown.keys() & changed & wanted
        for k in check:
            new = tuple(rows[k])
            old = self._shown[k]
            if new == old:
                continue
            for (col, _), a, b in zip(keys, old, new, strict=True):
                if a != b:
                    self.update_cell(k, col, b)
                    self.cells_updated += 1
            self._shown[k] = new
        if order is not None:
            for k in wanted & self._shown.keys():
                if self._order.get(k) != order[k]:
                    self._order[k] = order[k]
                    reorder = True
        added = sorted(wanted - self._shown.keys(),
                       key=None if order is None else (lambda k: (order[k], k)),
                       reverse=self.sort_reverse)
        if added:
            reorder = reorder or bool(self._shown)  # rows arriving later go to their place
            for k in added:
                new = tuple(rows[k])
                self.add_row(*new, key=k)
                self._shown[k] = new
                self._order[k] = k if order is None else order[k]
            self.rows_added += len(added)
        if reorder:
            self._reorder()

    def _reorder(self) -> None:
        """Put the rows in order without touching them (no row is removed or added)."""
        cursor_key = self.selected_key
        if TwoWayDict is None or not hasattr(self, "_row_locations"):
            self.sort(self.column_spec[0][0], key=lambda v: getattr(v, "plain", v),
                      reverse=self.sort_reverse)
        else:
            keys = sorted(self._data, key=lambda rk: (self._order[str(rk.value)], str(rk.value)),
                          reverse=self.sort_reverse)
            self._row_locations = TwoWayDict({rk: i for i, rk in enumerate(keys)})
            self._update_count += 1
            self.refresh()
        if cursor_key is not None and cursor_key in self._shown:
            self.move_cursor(row=self.get_row_index(cursor_key), animate=False)

    @property
    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    @property
    def shown_keys(self) -> list[str]:
        return [str(r.key.value) for r in self.ordered_rows]
