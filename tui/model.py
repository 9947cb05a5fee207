"""What the dashboard knows, without any I/O or widgets: the devices, alerts and cluster
the API returned, the samples seen per device (for the sparklines), the connection's
health, and the pure functions that turn them into table rows and status text.

The shapes are the API's JSON (``GET /devices``, ``/alerts``, ``/alerts/stream``,
``/cluster``); nothing here imports ``gateway``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

__all__ = [
    "ALERT_COLUMNS",
    "AMBER",
    "CLUSTER_COLUMNS",
    "GROUP_COLUMNS",
    "NEWS2_STYLES",
    "PATIENT_COLUMNS",
    "SEVERITIES",
    "STATE_FILTERS",
    "VEHICLE_COLUMNS",
    "VITALS",
    "Cell",
    "DashboardState",
    "alert_row",
    "backoff_delay",
    "cell_text",
    "change_order",
    "group_rows",
    "news2_cell",
    "partition_rows",
    "patient_row",
    "row_matches",
    "vehicle_row",
]

Cell = str | Text
Row = tuple[Cell, ...]

SEVERITIES = ("critical", "major", "minor", "info")
AMBER = "#ffbf00"
# NEWS2 clinical response: low -> ward-based; low-medium (a 3 in one parameter) and
# medium -> urgent review; high -> emergency response.
NEWS2_STYLES = {"low": "green", "low-medium": AMBER, "medium": AMBER, "high": "bold red"}
SEVERITY_STYLES = {"critical": "bold red", "major": "red", "minor": AMBER, "info": "cyan"}
STATUS_STYLES = {"online": "green", "offline": "red", "unknown": "dim"}

# (column key, label)
VEHICLE_COLUMNS = (("device", "Vehicle"), ("status", "Status"), ("speed", "km/h"),
                   ("position", "Position"), ("ignition", "Ignition"), ("alerts", "Alerts"),
                   ("seen", "Last seen"))
PATIENT_COLUMNS = (("device", "Patient"), ("status", "Status"), ("hr", "HR"), ("spo2", "SpO2"),
                   ("rr", "RR"), ("temp", "Temp"), ("bp", "BP"), ("news2", "NEWS2"),
                   ("alerts", "Alerts"), ("seen", "Last seen"))
ALERT_COLUMNS = (("severity", "Severity"), ("state", "State"), ("rule", "Rule"),
                 ("device", "Device"), ("message", "Message"), ("started", "Started"),
                 ("changed", "Changed"), ("by", "Ack by"))
CLUSTER_COLUMNS = (("topic", "Topic"), ("partition", "Partition"), ("leader", "Leader"),
                   ("replicas", "Replicas"), ("isr", "Isr"), ("earliest", "Earliest"),
                   ("log_end", "LogEnd"), ("lag", "Lag"))
GROUP_COLUMNS = (("group", "Group"), ("state", "State"), ("members", "Members"), ("lag", "Lag"))

# the vital signs a patient's detail view draws: (key in "vitals", label)
VITALS = (("heart_rate", "Heart rate (/min)"), ("spo2", "SpO2 (%)"), ("resp_rate", "Resp. rate (/min)"),
          ("temp_c", "Temperature (°C)"), ("sys_bp", "Systolic BP (mmHg)"))

# the Alerts screen's state filter, cycled with a key
STATE_FILTERS: dict[str, tuple[str, ...]] = {
    "active": ("firing", "acknowledged"), "firing": ("firing",),
    "acknowledged": ("acknowledged",), "resolved": ("resolved",),
    "all": ("firing", "acknowledged", "resolved"),
}


def backoff_delay(failures: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row: 1, 2, 4 ... 30."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))


def parse_time(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def fmt_time(iso: str | None) -> str:
    dt = parse_time(iso)
    return "-" if dt is None else dt.astimezone(UTC).strftime("%H:%M:%S")


def fmt_datetime(iso: str | None) -> str:
    dt = parse_time(iso)
    return "-" if dt is None else dt.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None or isinstance(v, bool) else fmt.format(v)


def cell_text(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _status_cell(status: str | None) -> Text:
    s = status or "unknown"
    return Text(s, style=STATUS_STYLES.get(s, ""))


def _alerts_cell(d: Mapping[str, Any]) -> Cell:
    n = len(d.get("active_alerts") or [])
    return Text(str(n), style="bold red") if n else "0"


def vehicle_row(d: Mapping[str, Any]) -> Row:
    pos = d.get("position") or {}
    speed = pos.get("speed")
    lat, lon = pos.get("lat"), pos.get("lon")
    ign = pos.get("ignition")
    return (
        str(d["id"]), _status_cell(d.get("status")),
        "-" if speed is None else f"{speed * 3.6:.1f}",
        "-" if lat is None or lon is None else f"{lat:.5f}, {lon:.5f}",
        "-" if ign is None else ("on" if ign else "off"),
        _alerts_cell(d), fmt_time(d.get("last_seen")),
    )


def news2_cell(news2: Mapping[str, Any] | None) -> Text:
    if not news2:
        return Text("-")
    risk = str(news2.get("risk") or "")
    return Text(f"{news2.get('total', '?')} {risk}", style=NEWS2_STYLES.get(risk, ""))


def patient_row(d: Mapping[str, Any]) -> Row:
    v = d.get("vitals") or {}
    if v.get("probe_off"):
        hr = spo2 = "probe off"
    else:
        hr, spo2 = _num(v.get("heart_rate")), _num(v.get("spo2"))
    sys_bp, dia_bp = v.get("sys_bp"), v.get("dia_bp")
    bp = "-" if sys_bp is None else f"{sys_bp:.0f}/{_num(dia_bp)}"
    return (
        str(d["id"]), _status_cell(d.get("status")), hr, spo2, _num(v.get("resp_rate")),
        _num(v.get("temp_c"), "{:.1f}"), bp, news2_cell(d.get("news2")), _alerts_cell(d),
        fmt_time(d.get("last_seen")),
    )


def alert_row(a: Mapping[str, Any]) -> Row:
    sev = str(a.get("severity") or "")
    state = str(a.get("state") or "")
    state_cell = Text(state + (" (silenced)" if a.get("silenced") else ""),
                      style={"firing": "bold", "resolved": "dim"}.get(state, ""))
    ack = a.get("acknowledged") or {}
    return (
        Text(sev, style=SEVERITY_STYLES.get(sev, "")), state_cell, str(a.get("rule") or ""),
        str(a.get("device") or ""), str(a.get("message") or ""), fmt_datetime(a.get("started_at")),
        fmt_datetime(a.get("last_change_at")), str(ack.get("by") or ""),
    )


def change_order(a: Mapping[str, Any]) -> float:
    """Alerts are listed by their last change, newest first (sort this descending)."""
    dt = parse_time(a.get("last_change_at"))
    return 0.0 if dt is None else dt.timestamp()


def _ids(v: Iterable[int] | None) -> str:
    return ",".join(str(i) for i in v or ())


def _partition_lags(cluster: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """The largest lag of any consumer group on each partition."""
    out: dict[tuple[str, int], int] = {}
    for g in cluster.get("groups") or ():
        for p in g.get("partitions") or ():
            if p.get("lag") is not None:
                k = (p["topic"], p["partition"])
                out[k] = max(out.get(k, 0), int(p["lag"]))
    return out


def partition_rows(cluster: Mapping[str, Any]) -> dict[str, Row]:
    """kafka-topics --describe: one row per partition, keyed ``topic/partition``."""
    lags = _partition_lags(cluster)
    rows: dict[str, Row] = {}
    for t in cluster.get("topics") or ():
        for p in t.get("partitions") or ():
            lag = lags.get((t["name"], p["partition"]))
            rows[f"{t['name']}/{p['partition']}"] = (
                str(t["name"]), str(p["partition"]), str(p.get("leader")), _ids(p.get("replicas")),
                _ids(p.get("isr")), _num(p.get("earliest")), _num(p.get("log_end")),
                "-" if lag is None else str(lag))
    return rows


def group_rows(cluster: Mapping[str, Any]) -> dict[str, Row]:
    return {str(g["group"]): (str(g["group"]), str(g.get("state") or ""), str(len(g.get("members") or ())),
                              _num(g.get("lag")))
            for g in cluster.get("groups") or ()}


def row_matches(row: Sequence[Cell], query: str) -> bool:
    """Every word of ``query`` occurs (case-insensitively) in some cell of the row."""
    words = query.lower().split()
    if not words:
        return True
    texts = [cell_text(c).lower() for c in row]
    return all(any(w in t for t in texts) for w in words)


def _sample_values(d: Mapping[str, Any]) -> dict[str, float | None]:
    if d.get("kind") == "vehicle":
        speed = (d.get("position") or {}).get("speed")
        return {"speed": None if speed is None else speed * 3.6}
    v = d.get("vitals") or {}
    return {k: (None if v.get("probe_off") and k in ("heart_rate", "spo2") else v.get(k))
            for k, _ in VITALS}


@dataclass
class DashboardState:
    """Everything the screens draw, updated by the poller and the alert stream."""

    history: int = 120  # samples kept per device and per overview sparkline
    max_resolved: int = 2000  # resolved alerts kept (the oldest go first)
    telemetry_topic: str = "telemetry"
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, deque[tuple[float, dict[str, float | None]]]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_change: int | None = None  # the alert stream's position (an SSE id)
    cluster: dict[str, Any] | None = None
    cluster_error: str | None = None
    last_ok: float | None = None  # clock time of the last complete poll
    failures: int = 0
    error: str | None = None
    unreachable: bool = True  # the error is no answer at all (else the API refused)
    retry_at: float | None = None
    stream_live: bool = False
    rates: deque[float] = field(default_factory=deque)
    firing: deque[float] = field(default_factory=deque)
    lags: deque[float] = field(default_factory=deque)
    _telemetry_prev: tuple[float, int] | None = None
    _resolved: int = 0  # resolved alerts applied since the last pruning (an upper bound)

    # --- devices ---------------------------------------------------------------------

    def apply_devices(self, items: Iterable[dict[str, Any]]) -> set[str]:
        """Replace the device list; returns the ids that are new or changed (and those gone)."""
        changed: set[str] = set()
        seen: set[str] = set()
        for d in items:
            i = str(d["id"])
            seen.add(i)
            old = self.devices.get(i)
            if old != d:
                changed.add(i)
                self.devices[i] = d
                if d.get("state_at") and (old is None or old.get("state_at") != d.get("state_at")):
                    at = parse_time(d["state_at"])
                    q = self.samples.setdefault(i, deque(maxlen=self.history))
                    q.append((at.timestamp() if at else 0.0, _sample_values(d)))
        for gone in set(self.devices) - seen:
            del self.devices[gone]
            self.samples.pop(gone, None)
            changed.add(gone)
        return changed

    def kind_of(self, device_id: str) -> str | None:
        d = self.devices.get(device_id)
        return None if d is None else d.get("kind")

    def series(self, device_id: str, name: str) -> list[float]:
        return [v for _, s in self.samples.get(device_id, ()) if (v := s.get(name)) is not None]

    def device_counts(self) -> dict[str, int]:
        out = {"online": 0, "offline": 0, "unknown": 0, "vehicle": 0, "patient": 0}
        for d in self.devices.values():
            out[d.get("status") or "unknown"] = out.get(d.get("status") or "unknown", 0) + 1
            if d.get("kind") in ("vehicle", "patient"):
                out[d["kind"]] += 1
        return out

    # --- alerts ----------------------------------------------------------------------

    def apply_alert(self, alert: dict[str, Any]) -> bool:
        """Keep the newer of what we have and ``alert`` (by its last change); True if kept."""
        old = self.alerts.get(alert["id"])
        if old is not None:
            new_at, old_at = parse_time(alert.get("last_change_at")), parse_time(old.get("last_change_at"))
            if new_at is not None and old_at is not None and new_at < old_at:
                return False
            if old == alert:
                return False
        self.alerts[alert["id"]] = alert
        if alert.get("state") == "resolved":
            self._resolved += 1
            if self._resolved > 2 * self.max_resolved:
                self._prune_resolved()
        return True

    def _prune_resolved(self) -> None:
        resolved = sorted((a for a in self.alerts.values() if a.get("state") == "resolved"),
                          key=change_order, reverse=True)
        for a in resolved[self.max_resolved:]:
            del self.alerts[a["id"]]
        self._resolved = min(len(resolved), self.max_resolved)

    def apply_change(self, change_id: int | None, data: Mapping[str, Any]) -> bool:
        """One SSE event (a ChangeEvent). Idempotent: a replayed change changes nothing."""
        if change_id is not None:
            if self.last_change is not None and change_id <= self.last_change:
                return False
            self.last_change = change_id
        alert = data.get("alert")
        return isinstance(alert, dict) and self.apply_alert(alert)

    def alerts_of(self, device_id: str) -> list[dict[str, Any]]:
        return sorted((a for a in self.alerts.values() if a.get("device") == device_id),
                      key=lambda a: a.get("last_change_at") or "", reverse=True)

    def alert_counts(self) -> dict[str, dict[str, int]]:
        """Per severity: how many are firing and acknowledged."""
        out = {s: {"firing": 0, "acknowledged": 0} for s in SEVERITIES}
        for a in self.alerts.values():
            st, sev = a.get("state"), a.get("severity")
            if sev in out and st in ("firing", "acknowledged"):
                out[sev][st] += 1
        return out

    # --- cluster ---------------------------------------------------------------------

    def apply_cluster(self, cluster: dict[str, Any] | None, now: float, error: str | None = None) -> None:
        self.cluster_error = error
        if cluster is None:
            return
        self.cluster = cluster
        log_end = sum((p.get("log_end") or 0) for t in cluster.get("topics") or ()
                      if t.get("name") == self.telemetry_topic for p in t.get("partitions") or ())
        prev = self._telemetry_prev
        if prev is not None and now > prev[0]:
            self._push(self.rates, max(0.0, (log_end - prev[1]) / (now - prev[0])))
        if prev is None or now > prev[0]:
            self._telemetry_prev = (now, log_end)
        self._push(self.lags, float(self.total_lag() or 0))

    def total_lag(self) -> int | None:
        if not self.cluster:
            return None
        known = [g["lag"] for g in self.cluster.get("groups") or () if g.get("lag") is not None]
        return sum(known) if known else None

    def events_per_s(self) -> float | None:
        return self.rates[-1] if self.rates else None

    def _push(self, q: deque[float], v: float) -> None:
        q.append(v)
        while len(q) > self.history:
            q.popleft()

    # --- the connection --------------------------------------------------------------

    def poll_ok(self, now: float) -> None:
        self.last_ok = now
        self.failures = 0
        self.error = None
        self.retry_at = None
        self._push(self.firing, float(sum(c["firing"] for c in self.alert_counts().values())))

    def poll_failed(self, now: float, error: str, unreachable: bool = True) -> float:
        """Record a failure; returns the delay before the next attempt."""
        self.failures += 1
        self.error = error
        self.unreachable = unreachable
        delay = backoff_delay(self.failures)
        self.retry_at = now + delay
        return delay

    def status_line(self, now: float, api: str) -> tuple[str, bool]:
        """The status bar's text and whether all is well."""
        age = "no data yet" if self.last_ok is None else f"data {max(0, int(now - self.last_ok))} s old"
        if self.error is not None:
            retry = "" if self.retry_at is None else f" · retrying in {max(0, round(self.retry_at - now))} s"
            what = "API unreachable" if self.unreachable else "API error"
            return f"✖ {what} ({self.error}) at {api} · {age}{retry}", False
        stream = "live" if self.stream_live else "reconnecting"
        return (f"● connected to {api} · {age} · {len(self.devices)} devices · "
                f"alert stream {stream}"), True
