"""The Textual app: ``VigilDash(client, clock=...)``.

Four loops run for the app's life, each waiting on the injected clock (so tests move
time by hand):

* the poller: ``GET /devices`` (every page) every ``interval`` seconds; when the API does
  not answer it backs off (1, 2, 4 ... 30 s) and the status bar says so and how old the
  data is; ``GET /cluster`` on a loop of its own (the API may wait seconds for the log);
* the alert stream: ``GET /alerts`` once, then ``GET /alerts/stream`` with
  ``Last-Event-ID`` so a reconnection misses nothing and repeats nothing;
* the status ticker, once a second: "data 42 s old".

Views only draw (``tui.views``); state lives in ``tui.model.DashboardState``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from tui.client import ApiClient, ApiError, Unreachable
from tui.clock import Clock, SystemClock
from tui.model import STATE_FILTERS, DashboardState, backoff_delay
from tui.table import KeyedTable
from tui.views import ActionModal, AlertsPane, ClusterPane, DeviceDetail, DevicesPane, OverviewPane

__all__ = ["PANES", "VigilDash"]

log = logging.getLogger("vigil.tui")

# (pane id, title, key)
PANES = (("overview", "Overview", "1"), ("vehicles", "Vehicles", "2"), ("patients", "Patients", "3"),
         ("alerts", "Alerts", "4"), ("cluster", "Cluster", "5"))

class VigilDash(App[None]):
    """The terminal dashboard of a Vigil gateway, a client of its HTTP API only."""

    TITLE = "Vigil"
    CSS = """
    #panes { height: 1fr; }
    #status, #detail-status { height: 1; padding: 0 1; background: $success-darken-2; color: $text; }
    #status.-down, #detail-status.-down { background: $error; }
    #filter { display: none; }
    #filter.-open { display: block; }
    #cards { grid-size: 2 2; grid-gutter: 1; height: 1fr; padding: 0 1; }
    .card { border: round $primary; padding: 0 1; }
    .card-title { text-style: bold; }
    .card-value { text-style: bold; color: $accent; }
    Sparkline { height: 3; margin-top: 1; }
    KeyedTable { height: 1fr; }
    #groups-table { height: 8; }
    .section { text-style: bold; margin-top: 1; padding: 0 1; }
    #alerts-filter, #cluster-info { padding: 0 1; color: $text-muted; }
    #detail-title { padding: 0 1; background: $primary-darken-2; }
    #detail-body { height: 1fr; }
    #detail-info { padding: 1 1 0 1; }
    .spark-row { height: 3; padding: 0 1; }
    .spark-label { width: 22; padding-top: 1; }
    .detail-spark { width: 1fr; margin-top: 0; }
    .spark-last { width: 22; padding: 1 0 0 1; }
    #detail-alerts { height: 12; }
    ActionModal { align: center middle; }
    #modal { width: 70; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    #modal-title { text-style: bold; margin-bottom: 1; }
    #modal-error { color: $error; height: auto; }
    #modal-buttons { height: auto; margin-top: 1; }
    #modal-buttons Button { margin-right: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"show_pane('{pane}')", title) for pane, title, key in PANES),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("R", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: ApiClient, *, clock: Clock | None = None, interval: float = 2.0,
                 state: DashboardState | None = None, telemetry_topic: str = "telemetry",
                 exit_on_sigterm: bool = False) -> None:
        super().__init__()
        self.exit_on_sigterm = exit_on_sigterm  # quit cleanly (terminal restored) on SIGTERM
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.interval = interval
        self.state = state or DashboardState(telemetry_topic=telemetry_topic)
        self.polls = 0  # completed polls of /devices (succeeded or not)
        self.cluster_polls = 0  # completed polls of /cluster
        self.stream_connections = 0
        self._fetched_resolved = False
        self._refresh_pending = False
        # the widgets the loops update, held here: a loop finishing while the app shuts
        # down must not find them gone
        self.tabs = TabbedContent(initial="overview", id="panes")
        self.views: dict[str, Any] = {
            "overview": OverviewPane(), "vehicles": DevicesPane("vehicle", id="vehicles-pane"),
            "patients": DevicesPane("patient", id="patients-pane"),
            "alerts": AlertsPane(id="alerts-pane"), "cluster": ClusterPane(id="cluster-pane")}
        self.filter_box = Input(placeholder="filter rows (Enter keeps it, Esc clears it)", id="filter")
        self.status_bar = Static("connecting...", id="status")

    # --- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with self.tabs:
            for pane, title, key in PANES:
                with TabPane(f"{key} {title}", id=pane):
                    yield self.views[pane]
        yield self.filter_box
        yield self.status_bar
        yield Footer()

    def on_mount(self) -> None:
        box = self.filter_box
        box.can_focus = False  # only while open: digits and letters are bindings otherwise
        box.blur()
        if self.exit_on_sigterm:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.exit)
        self._poll_loop()
        self._cluster_loop()
        self._stream_loop()
        self._tick_loop()
        self.update_status()

    async def on_unmount(self) -> None:
        if self.exit_on_sigterm:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        await self.client.aclose()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for pane, title, _ in PANES:
            yield SystemCommand(f"Show {title}", f"switch to the {title} screen",
                                lambda p=pane: self.action_show_pane(p))
        yield SystemCommand("Refresh now", "poll the API now", self.action_refresh)
        for name in STATE_FILTERS:
            yield SystemCommand(f"Alerts: show {name}", f"the Alerts screen shows {name} alerts",
                                lambda n=name: self._set_alert_filter(n))

    # --- panes -----------------------------------------------------------------------

    @property
    def active_pane(self) -> str:
        return self.tabs.active

    def pane_widget(self, pane: str | None = None) -> Any:
        """The view of ``pane`` (the active one by default)."""
        return self.views[pane or self.active_pane]

    def action_show_pane(self, pane: str) -> None:
        while isinstance(self.screen, DeviceDetail):  # a screen key leaves the detail view
            self.pop_screen()
        self.tabs.active = pane

    @on(TabbedContent.TabActivated)
    def _pane_shown(self, _event: TabbedContent.TabActivated) -> None:
        self.refresh_active()
        w = self.pane_widget()
        if hasattr(w, "table"):
            w.table.focus()
            self._show_query(w.table)

    def _refresh_soon(self) -> None:
        """Redraw once for a burst of alert changes (one frame's worth), not once each."""
        if not self._refresh_pending:
            self._refresh_pending = True
            self.call_after_refresh(self.refresh_active)

    def refresh_active(self) -> None:
        self._refresh_pending = False
        if not self.is_running:  # shutting down: a loop finished late
            return
        w = self.pane_widget()
        w.show(self.state)
        top = self.screen
        if isinstance(top, DeviceDetail):
            top.show(self.state)

    # --- the filter ------------------------------------------------------------------

    def action_filter(self) -> None:
        w = self.pane_widget()
        if not hasattr(w, "table") or self.screen is not self.filter_box.screen:
            self.notify("nothing to filter on this screen", severity="warning")
            return
        box = self.filter_box
        box.value = w.table.query_text
        box.add_class("-open")
        box.can_focus = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        w = self.pane_widget()
        if hasattr(w, "table"):
            w.table.set_query(event.value)
            w.refilter()
            w.show(self.state)
            self._show_query(w.table)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, _event: Input.Submitted) -> None:
        self._close_filter()

    def on_key(self, event: Any) -> None:
        box = self.filter_box
        if event.key == "escape" and box.has_focus:
            box.value = ""
            self._close_filter()
            event.stop()

    def _close_filter(self) -> None:
        box = self.filter_box
        box.remove_class("-open")
        box.can_focus = False
        w = self.pane_widget()
        if hasattr(w, "table"):
            w.table.focus()

    @staticmethod
    def _show_query(table: KeyedTable) -> None:
        table.border_title = f"filter: {table.query_text}" if table.query_text else None

    # --- drill-down and alert actions ---------------------------------------------------

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        table_id = event.data_table.id
        if table_id in ("vehicle-table", "patient-table") and event.row_key.value is not None:
            kind = "vehicle" if table_id == "vehicle-table" else "patient"
            self.open_device(str(event.row_key.value), kind)

    def open_device(self, device_id: str, kind: str) -> None:
        self.push_screen(DeviceDetail(device_id, kind, self.state), lambda _: self.update_status())
        self.call_after_refresh(self.update_status)
        self._fetch_device_alerts(device_id)

    @work(group="fetch")
    async def _fetch_device_alerts(self, device_id: str) -> None:
        try:
            for a in await self.client.alerts(device=device_id, max_items=200):
                self.state.apply_alert(a)
        except (Unreachable, ApiError) as exc:
            log.info("alerts of %s: %s", device_id, exc)
            return
        self.refresh_active()

    def selected_alert(self) -> dict[str, Any] | None:
        pane: AlertsPane = self.views["alerts"]
        key = pane.table.selected_key
        return None if key is None else self.state.alerts.get(key)

    def action_alert(self, action: str) -> None:
        alert = self.selected_alert()
        if alert is None:
            self.notify("no alert selected", severity="warning")
            return
        verb = {"ack": "Acknowledge", "unack": "Take back the acknowledgement of",
                "resolve": "Resolve", "silence": "Silence"}[action]
        target = (f"{alert['rule']} on {alert['device']}" if action != "silence"
                  else f"rule {alert['rule']} on device {alert['device']}")

        def done(answer: tuple[str, int] | None) -> None:
            if answer is not None:
                self._do_alert_action(alert, action, answer[0], answer[1])

        self.push_screen(ActionModal(f"{verb} {target}", ask_duration=action == "silence"), done)

    @work(group="actions")
    async def _do_alert_action(self, alert: dict[str, Any], action: str, comment: str,
                               seconds: int) -> None:
        try:
            if action == "silence":
                s = await self.client.silence(alert["rule"], alert["device"], seconds, comment or None)
                self.notify(f"silenced {alert['rule']} on {alert['device']} until {s.get('ends_at')}")
                return
            updated = await self.client.act(alert["id"], action, comment or None)
        except ApiError as exc:
            self.notify(f"{action} refused: {exc.message}", severity="error")
            return
        except Unreachable as exc:
            self.notify(f"{action} failed, the API did not answer: {exc}", severity="error")
            return
        self.state.apply_alert(updated)
        self.notify(f"{action}: {updated['rule']} on {updated['device']} is {updated['state']}")
        self.refresh_active()

    def action_cycle_alert_filter(self) -> None:
        names = list(STATE_FILTERS)
        pane: AlertsPane = self.views["alerts"]
        self._set_alert_filter(names[(names.index(pane.state_filter) + 1) % len(names)])

    def _set_alert_filter(self, name: str) -> None:
        self.views["alerts"].state_filter = name
        if "resolved" in STATE_FILTERS[name] and not self._fetched_resolved:
            self._fetched_resolved = True
            self._fetch_resolved()
        self.action_show_pane("alerts")
        self.refresh_active()

    @work(group="fetch")
    async def _fetch_resolved(self) -> None:
        try:
            for a in await self.client.alerts(states=("resolved",), max_items=1000):
                self.state.apply_alert(a)
        except (Unreachable, ApiError) as exc:
            self._fetched_resolved = False
            log.info("resolved alerts: %s", exc)
            return
        self.refresh_active()

    # --- polling ---------------------------------------------------------------------

    def action_refresh(self) -> None:
        self._poll_now()

    @work(group="poll-now")
    async def _poll_now(self) -> None:
        await asyncio.gather(self.poll_once(), self.cluster_once())

    async def poll_once(self) -> bool:
        """One round of ``GET /devices`` (every page); True if the API answered."""
        now = self.clock.now()
        try:
            devices = await self.client.devices()
        except Unreachable as exc:
            self.state.poll_failed(now, str(exc))
            ok = False
        except ApiError as exc:
            self.state.poll_failed(now, f"{exc.status} {exc.message}", unreachable=False)
            ok = False
        else:
            changed = self.state.apply_devices(devices)
            self.state.poll_ok(now)
            for pane in ("vehicles", "patients"):
                self.views[pane].absorb(self.state, changed)
            self.refresh_active()
            ok = True
        self.polls += 1
        self.update_status()
        return ok

    async def cluster_once(self) -> bool:
        """``GET /cluster`` (slow when the log is down: the API waits for it, so it has a
        loop of its own). A refusal (no log behind the API) is not an outage."""
        now = self.clock.now()
        try:
            self.state.apply_cluster(await self.client.cluster(), now)
            ok = True
        except ApiError as exc:
            self.state.apply_cluster(None, now, f"cluster: {exc.message}")
            ok = True
        except Unreachable as exc:
            self.state.apply_cluster(None, now, f"cluster: {exc}")
            ok = False
        self.cluster_polls += 1
        if self.active_pane in ("overview", "cluster"):
            self.refresh_active()
        return ok

    @work(group="cluster", exclusive=True)
    async def _cluster_loop(self) -> None:
        failures = 0
        while True:
            failures = 0 if await self.cluster_once() else failures + 1
            await self.clock.sleep(backoff_delay(failures) if failures else self.interval)

    @work(group="poller", exclusive=True)
    async def _poll_loop(self) -> None:
        while True:
            ok = await self.poll_once()
            if ok:
                await self.clock.sleep(self.interval)
            else:
                await self.clock.sleep(backoff_delay(self.state.failures))

    @work(group="stream", exclusive=True)
    async def _stream_loop(self) -> None:
        failures = 0
        while True:
            try:
                if self.state.last_change is None:
                    start = int((await self.client.healthz())["last_change"])
                    for a in await self.client.alerts(states=("firing", "acknowledged")):
                        self.state.apply_alert(a)
                    self.state.last_change = start
                    self.refresh_active()
                self.stream_connections += 1
                self.state.stream_live = True
                self.update_status()
                async for ev in self.client.stream(self.state.last_change):
                    failures = 0
                    if self.state.apply_change(ev.id, json.loads(ev.data)):
                        self._refresh_soon()
                log.info("the alert stream ended; reconnecting")
            except Unreachable as exc:
                log.info("alert stream: %s", exc)
            except ApiError as exc:
                log.warning("alert stream refused: %s", exc)
            except ValueError as exc:  # a malformed event: reconnect from the last good one
                log.warning("alert stream: bad event: %s", exc)
            self.state.stream_live = False
            self.update_status()
            failures += 1
            await self.clock.sleep(backoff_delay(failures))

    @work(group="ticker", exclusive=True)
    async def _tick_loop(self) -> None:
        while True:
            await self.clock.sleep(1.0)
            self.update_status()

    def update_status(self) -> None:
        if not self.is_running:
            return
        text, ok = self.state.status_line(self.clock.now(), self.client.base_url)
        bars = [self.status_bar]
        if isinstance(self.screen, DeviceDetail):
            bars += self.screen.query("#detail-status").results(Static)
        for bar in bars:
            bar.update(text)
            bar.set_class(not ok, "-down")
