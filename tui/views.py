"""The dashboard's views: the five panes (Overview, Vehicles, Patients, Alerts, Cluster),
a device's detail screen, and the modal that asks for a comment (and a duration).

Each view draws from a ``DashboardState`` (``tui.model``) when told to (``show``); none
of them does I/O. The app (``tui.app``) polls, streams and calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, Sparkline, Static

from tui.model import (
    ALERT_COLUMNS,
    CLUSTER_COLUMNS,
    GROUP_COLUMNS,
    PATIENT_COLUMNS,
    SEVERITIES,
    SEVERITY_STYLES,
    STATE_FILTERS,
    VEHICLE_COLUMNS,
    VITALS,
    DashboardState,
    alert_row,
    change_order,
    fmt_datetime,
    group_rows,
    news2_cell,
    partition_rows,
    patient_row,
    vehicle_row,
)
from tui.table import KeyedTable

__all__ = [
    "ActionModal",
    "AlertsPane",
    "ClusterPane",
    "DeviceDetail",
    "DevicesPane",
    "OverviewPane",
]


class OverviewPane(Vertical):
    """Events/s, alerts by severity, devices online/offline, consumer lag, with sparklines."""

    def compose(self) -> ComposeResult:
        with Grid(id="cards"):
            with Vertical(classes="card", id="card-events"):
                yield Label("Events/s (telemetry)", classes="card-title")
                yield Static("-", id="events-value", classes="card-value")
                yield Sparkline([], id="events-spark")
            with Vertical(classes="card", id="card-alerts"):
                yield Label("Alerts (firing / acknowledged)", classes="card-title")
                yield Static("-", id="alerts-value")
                yield Sparkline([], id="firing-spark")
            with Vertical(classes="card", id="card-devices"):
                yield Label("Devices", classes="card-title")
                yield Static("-", id="devices-value")
            with Vertical(classes="card", id="card-lag"):
                yield Label("Consumer lag (records)", classes="card-title")
                yield Static("-", id="lag-value")
                yield Sparkline([], id="lag-spark")

    def show(self, state: DashboardState) -> None:
        rate = state.events_per_s()
        self.query_one("#events-value", Static).update("-" if rate is None else f"{rate:,.1f}")
        self.query_one("#events-spark", Sparkline).data = list(state.rates)
        counts = state.alert_counts()
        text = Text()
        for sev in SEVERITIES:
            c = counts[sev]
            text.append(f"{sev:<9}", style=SEVERITY_STYLES[sev])
            text.append(f"{c['firing']:>5} / {c['acknowledged']:<5}\n")
        self.query_one("#alerts-value", Static).update(text)
        self.query_one("#firing-spark", Sparkline).data = list(state.firing)
        dc = state.device_counts()
        dev = Text()
        dev.append("online   ", style="green").append(f"{dc['online']:>6}\n")
        dev.append("offline  ", style="red").append(f"{dc['offline']:>6}\n")
        dev.append("unknown  ", style="dim").append(f"{dc['unknown']:>6}\n")
        dev.append(f"vehicles {dc['vehicle']:>6}\npatients {dc['patient']:>6}")
        self.query_one("#devices-value", Static).update(dev)
        lag = Text()
        if state.cluster is None:
            lag.append(state.cluster_error or "no cluster data yet", style="dim")
        else:
            total = state.total_lag()
            lag.append(f"total {'-' if total is None else f'{total:,}'}\n", style="bold")
            for g in state.cluster.get("groups") or ():
                lag.append(f"{g['group']}: {'-' if g.get('lag') is None else g['lag']}\n")
        self.query_one("#lag-value", Static).update(lag)
        self.query_one("#lag-spark", Sparkline).data = list(state.lags)


class DevicesPane(Vertical):
    """Vehicles or patients: one keyed row per device, patched in place."""

    def __init__(self, kind: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.kind = kind
        self.rows: dict[str, tuple[Any, ...]] = {}
        self._pending: set[str] | None = None  # ids changed since the table was last synced

    def compose(self) -> ComposeResult:
        columns = VEHICLE_COLUMNS if self.kind == "vehicle" else PATIENT_COLUMNS
        yield KeyedTable(columns, id=f"{self.kind}-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def absorb(self, state: DashboardState, changed: set[str]) -> None:
        """Take the changed devices into the row cache (cheap; the table waits for ``show``)."""
        make = vehicle_row if self.kind == "vehicle" else patient_row
        mine: set[str] = set()
        for i in changed:
            d = state.devices.get(i)
            if d is not None and d.get("kind") == self.kind:
                self.rows[i] = make(d)
                mine.add(i)
            elif self.rows.pop(i, None) is not None:
                mine.add(i)
        if self._pending is not None:
            self._pending |= mine

    def show(self, state: DashboardState) -> None:
        self.table.sync(self.rows, self._pending)
        self._pending = set()

    def refilter(self) -> None:
        self._pending = None


class AlertsPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "app.alert('ack')", "Ack"),
        Binding("u", "app.alert('unack')", "Unack"),
        Binding("x", "app.alert('resolve')", "Resolve"),
        Binding("s", "app.alert('silence')", "Silence"),
        Binding("f", "app.cycle_alert_filter", "States"),
    ]

    state_filter = "active"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {}  # id: (alert, its row)

    def _row(self, a: dict[str, Any]) -> tuple[Any, ...]:
        cached = self._rows.get(a["id"])
        if cached is None or cached[0] is not a:
            cached = self._rows[a["id"]] = (a, alert_row(a))
        return cached[1]

    def compose(self) -> ComposeResult:
        yield Static("", id="alerts-filter")
        yield KeyedTable(ALERT_COLUMNS, sort_reverse=True, id="alerts-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def show(self, state: DashboardState) -> None:
        states = STATE_FILTERS[self.state_filter]
        shown = {i: a for i, a in state.alerts.items() if a.get("state") in states}
        rows = {i: self._row(a) for i, a in shown.items()}
        for gone in self._rows.keys() - state.alerts.keys():
            del self._rows[gone]
        self.query_one("#alerts-filter", Static).update(
            f"showing {self.state_filter} alerts ({len(rows)}) · f: state filter · /: search · "
            f"a: ack · u: unack · x: resolve · s: silence")
        self.table.sync(rows, order={i: change_order(a) for i, a in shown.items()})

    def refilter(self) -> None:
        pass


class ClusterPane(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="cluster-info")
        yield KeyedTable(CLUSTER_COLUMNS, id="partitions-table")
        yield Label("Consumer groups", classes="section")
        yield KeyedTable(GROUP_COLUMNS, id="groups-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#partitions-table", KeyedTable)

    def show(self, state: DashboardState) -> None:
        info = self.query_one("#cluster-info", Static)
        c = state.cluster
        if c is None:
            info.update(state.cluster_error or "no cluster data yet")
            return
        brokers = ", ".join(f"{b['id']}@{b['host']}:{b['port']}" for b in c.get("brokers") or ())
        note = f" · {state.cluster_error}" if state.cluster_error else ""
        info.update(f"brokers: {brokers or '-'} · controller: {c.get('controller')} · "
                    f"topics: {len(c.get('topics') or ())}{note}")
        self.table.sync(partition_rows(c))
        self.query_one("#groups-table", KeyedTable).sync(group_rows(c))

    def refilter(self) -> None:
        pass


class DeviceDetail(Screen[None]):
    """One vehicle or patient: what it reports, sparklines of the samples the dashboard has
    seen, and its alerts."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, device_id: str, kind: str, state: DashboardState) -> None:
        super().__init__()
        self.device_id = device_id
        self.kind = kind
        self.state = state
        self._ready = False

    def on_mount(self) -> None:
        self._ready = True
        self.show(self.state)

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with VerticalScroll(id="detail-body"):
            yield Static(id="detail-info")
            series = [("speed", "Speed (km/h)")] if self.kind == "vehicle" else list(VITALS)
            for key, label in series:
                with Horizontal(classes="spark-row"):
                    yield Label(label, classes="spark-label")
                    yield Sparkline([], id=f"spark-{key}", classes="detail-spark")
                    yield Static("-", id=f"last-{key}", classes="spark-last")
            yield Label("Alerts", classes="section")
            yield KeyedTable(ALERT_COLUMNS, sort_reverse=True, id="detail-alerts")
        yield Static("", id="detail-status")
        yield Footer()

    def show(self, state: DashboardState) -> None:
        if not self._ready:  # drawn on mount
            return
        d = state.devices.get(self.device_id) or {"id": self.device_id}
        self.query_one("#detail-title", Static).update(
            Text.assemble((f"{self.kind} {self.device_id}", "bold"), "  ",
                          (str(d.get("status") or "unknown"), "")))
        self.query_one("#detail-info", Static).update(_device_info(d))
        series = [("speed", "")] if self.kind == "vehicle" else list(VITALS)
        for key, _ in series:
            values = state.series(self.device_id, key)
            self.query_one(f"#spark-{key}", Sparkline).data = values
            self.query_one(f"#last-{key}", Static).update(
                "-" if not values else f"{values[-1]:.1f} ({len(values)} samples)")
        mine = state.alerts_of(self.device_id)
        self.query_one("#detail-alerts", KeyedTable).sync(
            {a["id"]: alert_row(a) for a in mine}, order={a["id"]: change_order(a) for a in mine})


def _device_info(d: Mapping[str, Any]) -> Text:
    t = Text()
    if d.get("kind") == "vehicle":
        p = d.get("position") or {}
        speed = p.get("speed")
        t.append(f"speed {'-' if speed is None else f'{speed * 3.6:.1f} km/h'} · "
                 f"position {p.get('lat')}, {p.get('lon')} · ignition {p.get('ignition')}\n")
        w = d.get("window") or {}
        if w:
            t.append(f"last window: {w.get('count')} samples, mean "
                     f"{(w.get('mean_speed') or 0) * 3.6:.1f} km/h, max "
                     f"{(w.get('max_speed') or 0) * 3.6:.1f} km/h, {w.get('distance_m') or 0:.0f} m\n")
    elif d.get("kind") == "patient":
        v = d.get("vitals") or {}
        t.append("NEWS2 ").append(news2_cell(d.get("news2"))).append(
            f" · on oxygen {v.get('on_oxygen')} · consciousness {v.get('consciousness')}"
            f"{' · PROBE OFF' if v.get('probe_off') else ''}\n")
        n = d.get("news2") or {}
        if n.get("scores"):
            t.append("scores: " + ", ".join(f"{k} {s}" for k, s in sorted(n["scores"].items())) + "\n")
    t.append(f"last seen {fmt_datetime(d.get('last_seen'))} · agent {d.get('version') or '-'} · "
             f"outbox {d.get('outbox_depth') if d.get('outbox_depth') is not None else '-'} · "
             f"dropped {d.get('dropped') if d.get('dropped') is not None else '-'}")
    return t


class ActionModal(ModalScreen[tuple[str, int] | None]):
    """Asks for a comment (and, to silence, a duration); returns (comment, seconds)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, *, ask_duration: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.ask_duration = ask_duration

    def compose(self) -> ComposeResult:
        with Vertical(id="modal"):
            yield Label(self.title_text, id="modal-title")
            if self.ask_duration:
                yield Input(value="1h", placeholder="duration: 30m, 2h, 1d", id="duration")
            yield Input(placeholder="comment (optional)", id="comment")
            yield Static("", id="modal-error")
            with Horizontal(id="modal-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#comment", Input).focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        seconds = 0
        if self.ask_duration:
            raw = self.query_one("#duration", Input).value
            parsed = parse_duration(raw)
            if parsed is None:
                self.query_one("#modal-error", Static).update(
                    f"not a duration: {raw!r} (say 30m, 2h or 1d)")
                return
            seconds = parsed
        self.dismiss((self.query_one("#comment", Input).value.strip(), seconds))


def parse_duration(text: str) -> int | None:
    """'90', '90s', '30m', '2h', '1d' -> seconds; None if it is not one."""
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    mult = units.get(t[-1:])
    number = t[:-1] if mult else t
    try:
        n = float(number)
    except ValueError:
        return None
    seconds = int(n * (mult or 1))
    return seconds if seconds > 0 else None
