"""The bridge's pure core: messages in, records and acks out, no sockets."""

from __future__ import annotations

import json

from edge import wire
from gateway.core import AckLedger, DeviceAcks, SkewBounds, classify

NOW = 1_764_072_000_000


def _batch(device: str, *seqs: int, ts: int = NOW) -> bytes:
    return wire.encode_events(device, [wire.Event(device, s, ts, "gps", {"lat": 52.1}) for s in seqs])


def test_each_valid_event_becomes_a_record_keyed_by_device() -> None:
    c = classify("vigil/truck-7/events", _batch("truck-7", 41, 42), now_ms=NOW)
    assert c.device == "truck-7" and (c.first_seq, c.ack_seq) == (41, 42) and c.accepted == 2 and c.rejected == {}
    r = c.records[0]
    assert (r.topic, r.key, r.timestamp_ms) == ("telemetry", b"truck-7", NOW)
    assert json.loads(r.value) == {"device": "truck-7", "seq": 41, "ts": NOW, "kind": "gps", "data": {"lat": 52.1}}
    assert dict(r.headers) == {"seq": b"41", "kind": b"gps", "schema": b"1"}


def test_a_bad_event_is_rejected_alone_and_still_settles_its_seq() -> None:
    doc = {"v": 1, "device": "d1", "events": [
        {"seq": 1, "ts": NOW, "kind": "gps", "data": {}},
        {"seq": 2, "ts": NOW, "kind": "GPS!", "data": {}},
        {"seq": 3, "ts": NOW, "kind": "gps", "data": {}}]}
    c = classify("vigil/d1/events", json.dumps(doc).encode(), now_ms=NOW)
    assert [r.topic for r in c.records] == ["telemetry", "telemetry", "telemetry.rejected"]
    assert c.records[2].header("reason") == b"invalid-event" and c.records[2].header("seq") == b"2"
    assert c.ack_seq == 3 and c.rejected == {"invalid-event": 1}


def test_refusals_carry_their_reason() -> None:
    cases = {
        ("vigil/d1/events", b"not json"): "bad-envelope",
        ("vigil/d1/events", _batch("d2", 1)): "identity",
        ("vigil/d1/status", _batch("d1", 1)): "bad-topic",
        ("vigil/d1/events", b"x" * (wire.MAX_EVENTS_PAYLOAD + 1)): "oversize",
    }
    for (topic, payload), reason in cases.items():
        c = classify(topic, payload, now_ms=NOW)
        [rec] = c.records
        assert rec.topic == "telemetry.rejected" and rec.header("reason") == reason.encode(), reason
        assert c.ack_seq is None and c.rejected == {reason: 1}
        assert len(rec.value) <= min(len(payload), wire.MAX_EVENTS_PAYLOAD)


def test_clock_skew_is_flagged_and_the_timestamp_kept() -> None:
    bounds = SkewBounds(future_ms=1000, past_ms=60_000)
    c = classify("vigil/d1/events", _batch("d1", 1, ts=NOW + 5000), now_ms=NOW, skew=bounds)
    assert c.records[0].header("clock-skew") == b"5000" and c.records[0].timestamp_ms == NOW + 5000
    c = classify("vigil/d1/events", _batch("d1", 1, ts=NOW - 120_000), now_ms=NOW, skew=bounds)
    assert c.records[0].header("clock-skew") == b"-120000" and c.skewed == 1
    c = classify("vigil/d1/events", _batch("d1", 1, ts=NOW - 500), now_ms=NOW, skew=bounds)
    assert c.records[0].header("clock-skew") is None


def test_messages_complete_in_receive_order_only() -> None:
    ledger = AckLedger()
    a = ledger.add(mid=1, qos=1, generation=1, device="d1", first_seq=1, ack_seq=10, records=2, received_at=0)
    b = ledger.add(mid=2, qos=1, generation=1, device="d1", first_seq=11, ack_seq=20, records=1, received_at=0)
    ledger.delivered(b)
    assert ledger.pop_completed() == []  # the later message waits for the earlier one
    ledger.delivered(a)
    assert ledger.pop_completed() == []
    ledger.delivered(a)
    assert [c.mid for c in ledger.pop_completed()] == [1, 2]


def test_a_message_with_nothing_to_write_completes_at_once_in_its_turn() -> None:
    ledger = AckLedger()
    first = ledger.add(1, 1, 1, "d1", 1, 5, 1, 0)
    ledger.add(2, 1, 1, None, None, None, 0, 0)
    assert ledger.pop_completed() == []
    ledger.delivered(first)
    assert [c.mid for c in ledger.pop_completed()] == [1, 2]


def test_a_device_ack_covers_only_contiguously_committed_seqs() -> None:
    acks = DeviceAcks(gap_wait_ms=2000)
    assert acks.committed("d1", 1, 20, now_ms=0) == 20  # nothing known: the start
    assert acks.committed("d1", 41, 60, now_ms=10) is None  # 21..40 are with another bridge
    assert acks.committed("d1", 61, 80, now_ms=20) is None
    assert acks.observed("d1", 40) == 80  # the peer acked 40: 41..80 follow on
    assert acks.committed("d1", 1, 20, now_ms=30) == 80  # a resent old batch: the ack again
    assert acks.acked("d1") == 80


def test_a_gap_nobody_fills_is_passed_after_the_wait() -> None:
    acks = DeviceAcks(gap_wait_ms=2000)
    acks.committed("d1", 1, 10, now_ms=0)
    assert acks.committed("d1", 16, 20, now_ms=100) is None  # 11..15 dropped at the edge
    assert acks.expire(now_ms=1000) == {}
    assert acks.expire(now_ms=2100) == {"d1": 20}
    assert acks.committed("d1", 21, 30, now_ms=2200) == 30


def test_a_peer_ack_below_ours_changes_nothing() -> None:
    acks = DeviceAcks()
    acks.committed("d1", 1, 50, now_ms=0)
    assert acks.observed("d1", 30) is None and acks.acked("d1") == 50


def test_the_acl_gives_each_device_its_own_topics_only() -> None:
    from gateway.credentials import acl_text, may

    assert may("device", "truck-1", "vigil/truck-1/events", "publish")
    assert may("device", "truck-1", "vigil/truck-1/status", "publish")
    assert not may("device", "truck-1", "vigil/truck-2/events", "publish")
    assert not may("device", "truck-1", "vigil/truck-1/ack", "publish")
    assert may("device", "truck-1", "vigil/truck-1/ack", "subscribe")
    assert not may("device", "truck-1", "vigil/+/ack", "subscribe")
    assert not may("device", "truck-1", "vigil/#", "subscribe")
    assert may("bridge", "vigil-bridge", "vigil/+/events", "subscribe")
    assert may("bridge", "vigil-bridge", "vigil/truck-1/events", "receive")
    assert may("bridge", "vigil-bridge", "vigil/truck-1/ack", "publish")
    assert not may("bridge", "vigil-bridge", "vigil/truck-1/events", "publish")
    assert not may("bridge", "vigil-bridge", "vigil/#", "subscribe")
    text = acl_text(["truck-1"], ["vigil-bridge"])
    assert "user truck-1\ntopic write vigil/truck-1/events\ntopic write vigil/truck-1/status\n" \
           "topic read vigil/truck-1/ack\ntopic read vigil/truck-1/config\n" in text
