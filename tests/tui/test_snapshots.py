"""A snapshot of each screen (pytest-textual-snapshot), drawn from recorded API answers
(``recorded_api.json``) with a manual clock, so every run draws the same picture.
Update with ``pytest tests/tui/test_snapshots.py --snapshot-update`` after a deliberate
change, and look at the report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from textual.pilot import Pilot

from tests.tui.conftest import START, until
from tests.tui.recorded import ROUNDS, Recorded
from tui import ApiClient, ManualClock, VigilDash
from tui.table import KeyedTable

SIZE = (150, 42)


def replayed(recorded: Recorded | None = None) -> VigilDash:
    rec = recorded or Recorded()
    client = ApiClient("http://vigil.test", "recorded", transport=rec.transport())
    return VigilDash(client, clock=ManualClock(START), interval=2.0)


def polled(app: VigilDash, n: int) -> bool:
    return app.polls == app.cluster_polls == n


async def all_rounds(pilot: Pilot[Any]) -> None:
    """Three polls, two seconds apart (the recorded rounds), and the alert stream up."""
    app = pilot.app
    assert isinstance(app, VigilDash) and isinstance(app.clock, ManualClock)
    await until(pilot, lambda: app.polls == app.cluster_polls == 1 and app.state.stream_live,
                "the first poll")
    for n in range(2, ROUNDS + 1):
        app.clock.advance(2)
        await until(pilot, partial(polled, app, n), "the next poll")
    await pilot.pause()


def then(*keys: str, row: tuple[str, str] | None = None,
         after: tuple[str, ...] = ()) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Press ``keys``, put the cursor on ``row`` (table id, row key), press ``after``."""

    async def run(pilot: Pilot[Any]) -> None:
        await all_rounds(pilot)
        await pilot.press(*keys)
        if row is not None:
            table = pilot.app.query_one(f"#{row[0]}", KeyedTable)
            table.move_cursor(row=table.get_row_index(row[1]))
        await pilot.press(*after)
        await pilot.pause()

    return run


def test_overview(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE, run_before=all_rounds)


def test_vehicles(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE, run_before=then("2"))


def test_vehicle_detail(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE,
                        run_before=then("2", row=("vehicle-table", "truck-3"), after=("enter",)))


def test_patients(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE, run_before=then("3"))


def test_patient_detail(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE,
                        run_before=then("3", row=("patient-table", "bed-4"), after=("enter",)))


def test_alerts(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE, run_before=then("4"))


def test_acknowledge_modal(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE,
                        run_before=then("4", "a", *"on my way"))


def test_cluster(snap_compare: Any) -> None:
    assert snap_compare(replayed(), terminal_size=SIZE, run_before=then("5"))


def test_api_unreachable(snap_compare: Any) -> None:
    rec = Recorded()

    async def run(pilot: Pilot[Any]) -> None:
        await all_rounds(pilot)
        app = pilot.app
        assert isinstance(app, VigilDash) and isinstance(app.clock, ManualClock)
        rec.down = True
        polls = app.polls
        app.clock.advance(2)
        await until(pilot, lambda: app.polls > polls and app.cluster_polls > polls, "a failed poll")
        app.clock.advance(40)
        await until(pilot, lambda: "data 42 s old" in str(app.query_one("#status").render()),
                    "the staleness")
        await pilot.press("2")

    assert snap_compare(replayed(rec), terminal_size=SIZE, run_before=run)
