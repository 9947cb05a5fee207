"""The dashboard's pure core: SSE parsing, backoff, the status line, idempotent alert
changes, device samples, rows and their colours, the kafka-topics layout, durations."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.client import SseEvent, SseParser
from tui.model import (
    DashboardState,
    alert_row,
    backoff_delay,
    group_rows,
    news2_cell,
    partition_rows,
    patient_row,
    row_matches,
    vehicle_row,
)
from tui.views import parse_duration


def test_sse_parser_reads_events_and_skips_comments() -> None:
    p = SseParser()
    lines = ["retry: 2000", ": connected", "", "id: 7", "event: fired", 'data: {"a":', "data: 1}", "",
             ": keepalive", "", "id: 8", "event: acknowledged", "data: {}", ""]
    events = [e for line in lines if (e := p.feed(line)) is not None]
    assert events == [SseEvent(7, "fired", '{"a":\n1}'), SseEvent(8, "acknowledged", "{}")]


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_status_line_says_how_stale_the_data_is() -> None:
    s = DashboardState()
    assert s.status_line(100.0, "http://api")[0].startswith("● connected to http://api · no data yet")
    s.poll_ok(100.0)
    assert "data 0 s old" in s.status_line(100.4, "http://api")[0]
    assert s.poll_failed(102.0, "connection refused") == 1.0
    text, ok = s.status_line(142.0, "http://api")
    assert not ok
    assert text == ("✖ API unreachable (connection refused) at http://api · data 42 s old · "
                    "retrying in 0 s")
    s.poll_failed(143.0, "401 unknown or revoked token", unreachable=False)
    assert s.status_line(143.0, "http://api")[0].startswith("✖ API error (401 unknown or revoked token)")
    s.poll_ok(150.0)
    assert s.status_line(150.0, "http://api")[1] and s.failures == 0


def alert(state: str = "firing", at: str = "2026-09-21T14:13:20Z", **kw: Any) -> dict[str, Any]:
    return {"id": "a1", "fingerprint": "overspeed|truck-7", "rule": "overspeed", "device": "truck-7",
            "device_kind": "vehicle", "state": state, "severity": "major", "message": "fast",
            "started_at": "2026-09-21T14:13:20Z", "last_change_at": at, "acknowledged": None,
            "silenced": False, **kw}


def test_a_replayed_change_changes_nothing() -> None:
    s = DashboardState(last_change=10)
    acked = alert("acknowledged", "2026-09-21T14:13:25Z", acknowledged={"by": "ann"})
    assert s.apply_change(11, {"alert": acked})
    assert not s.apply_change(11, {"alert": alert()})  # the same change again: ignored
    assert not s.apply_change(9, {"alert": alert()})  # older than where the stream is
    assert s.alerts["a1"]["state"] == "acknowledged"
    # the list and the stream overlap: an older snapshot never wins over a newer one
    assert not s.apply_alert(alert("firing", "2026-09-21T14:13:21Z"))
    assert s.alert_counts()["major"] == {"firing": 0, "acknowledged": 1}


def test_devices_keep_samples_only_when_their_state_changes() -> None:
    s = DashboardState()
    d = {"id": "truck-1", "kind": "vehicle", "status": "online", "position": {"speed": 10.0},
         "state_at": "2026-09-21T14:13:20Z"}
    assert s.apply_devices([d]) == {"truck-1"}
    assert s.apply_devices([dict(d)]) == set()  # nothing new
    assert s.apply_devices([{**d, "status": "offline"}]) == {"truck-1"}  # status only: no sample
    assert s.apply_devices([{**d, "position": {"speed": 20.0}, "state_at": "2026-09-21T14:13:22Z"}])
    assert s.series("truck-1", "speed") == [36.0, 72.0]
    assert s.apply_devices([]) == {"truck-1"} and s.devices == {} and s.series("truck-1", "speed") == []


def test_rows() -> None:
    v = vehicle_row({"id": "truck-1", "status": "online", "last_seen": "2026-09-21T14:13:20.5Z",
                     "position": {"lat": 48.1, "lon": 11.5, "speed": 12.5, "ignition": False},
                     "active_alerts": ["overspeed|truck-1"]})
    assert [str(c) for c in v] == ["truck-1", "online", "45.0", "48.10000, 11.50000", "off", "1",
                                   "14:13:20"]
    p = patient_row({"id": "bed-1", "vitals": {"heart_rate": 80, "spo2": 97, "resp_rate": 16,
                                               "temp_c": 37.04, "sys_bp": 120, "dia_bp": 80}})
    assert [str(c) for c in p] == ["bed-1", "unknown", "80", "97", "16", "37.0", "120/80", "-", "0", "-"]
    off = patient_row({"id": "bed-2", "vitals": {"probe_off": True, "heart_rate": None}})
    assert [str(c) for c in off[2:4]] == ["probe off", "probe off"]
    assert news2_cell({"total": 3, "risk": "low-medium"}) == Text("3 low-medium", style="#ffbf00")
    assert news2_cell(None) == Text("-")
    row = alert_row(alert(silenced=True, acknowledged={"by": "ann"}))
    assert str(row[1]) == "firing (silenced)" and row[-1] == "ann"
    assert row_matches(row, "TRUCK over") and not row_matches(row, "bed")


CLUSTER = {
    "topics": [{"name": "telemetry", "partitions": [
        {"partition": 0, "leader": 1, "replicas": [1, 2, 0], "isr": [1, 2], "earliest": 0, "log_end": 50},
        {"partition": 1, "leader": 2, "replicas": [2, 0, 1], "isr": [2, 0, 1], "earliest": 5,
         "log_end": 40}]}],
    "groups": [
        {"group": "a", "state": "stable", "members": [{}], "lag": 12, "partitions": [
            {"topic": "telemetry", "partition": 0, "committed": 38, "log_end": 50, "lag": 12}]},
        {"group": "b", "state": "empty", "members": [], "lag": 3, "partitions": [
            {"topic": "telemetry", "partition": 0, "committed": 47, "log_end": 50, "lag": 3},
            {"topic": "telemetry", "partition": 1, "committed": None, "log_end": 40, "lag": None}]}],
}


def test_partitions_in_kafka_topics_describe_layout() -> None:
    assert partition_rows(CLUSTER) == {
        "telemetry/0": ("telemetry", "0", "1", "1,2,0", "1,2", "0", "50", "12"),
        "telemetry/1": ("telemetry", "1", "2", "2,0,1", "2,0,1", "5", "40", "-")}
    assert group_rows(CLUSTER) == {"a": ("a", "stable", "1", "12"), "b": ("b", "empty", "0", "3")}


def test_events_per_second_from_the_log_end_of_telemetry() -> None:
    s = DashboardState()
    s.apply_cluster(CLUSTER, 100.0)
    assert s.events_per_s() is None and s.total_lag() == 15
    grown = {**CLUSTER, "topics": [{"name": "telemetry", "partitions": [
        {"partition": 0, "log_end": 70}, {"partition": 1, "log_end": 60}]}]}
    s.apply_cluster(grown, 104.0)
    assert s.events_per_s() == 10.0  # 40 records in 4 s


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1d", "1.5h", "", "x", "0", "-5m")] == [
        90, 90, 1800, 7200, 86400, 5400, None, None, None, None]


def test_resolved_alerts_are_bounded_newest_kept() -> None:
    s = DashboardState(max_resolved=3)
    s.apply_alert(alert("firing", id="live"))
    for i in range(10):
        s.apply_alert(alert("resolved", f"2026-09-21T14:14:{i:02d}Z", id=f"r{i}"))
    kept = sorted(k for k in s.alerts if k.startswith("r"))
    assert "live" in s.alerts and len(kept) <= 6 and "r9" in kept and "r0" not in kept
