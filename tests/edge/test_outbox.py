"""The outbox: seq allocation that survives restarts, acks, batches, and the drop policy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge import wire
from edge.outbox import Outbox
from edge.sensors.base import Reading


def readings(n: int, start: int = 0, pad: int = 0) -> list[Reading]:
    return [Reading("counter", {"n": i, "pad": "x" * pad}, 1_700_000_000_000 + i) for i in range(start, start + n)]


def test_seq_is_allocated_with_the_insert_and_continues_after_a_restart(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        events = o.append(readings(3))
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0] == wire.Event("dev-1", 1, 1_700_000_000_000, "counter", {"n": 0, "pad": ""})
        o.ack(3)  # everything acked: the outbox is empty...
        assert o.stats().depth == 0
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        assert [e.seq for e in o.append(readings(2))] == [4, 5]  # ...and seqs are still not reused


def test_a_stored_seq_is_never_reused_even_if_the_counter_row_is_behind(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        o.append(readings(5))
    db = sqlite3.connect(tmp_path / "o.sqlite")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'next_seq'")  # a damaged counter
    db.commit()
    db.close()
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        assert [e.seq for e in o.append(readings(1))] == [6]


def test_batches_are_oldest_first_and_bounded_by_count_and_payload_size(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        o.append(readings(100, pad=3000))
        b = o.next_batch(max_events=500)
        payload = wire.encode_events("dev-1", b)
        assert len(payload) <= wire.MAX_EVENTS_PAYLOAD and len(b) > 50
        assert [e.seq for e in b] == list(range(1, len(b) + 1))
        assert wire.decode_events(payload).events == b
        assert [e.seq for e in o.next_batch(10, after_seq=95)] == [96, 97, 98, 99, 100]
        assert len(o.next_batch(7)) == 7


@pytest.mark.parametrize("acks", [[10, 4, 10, 7], [4, 7, 10, 10], [10, 10**9, -1, 0]])
def test_acks_out_of_order_duplicate_or_unknown_are_harmless(tmp_path: Path, acks: list[int]) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        o.append(readings(20))
        for seq in acks:
            o.ack(seq)
        assert o.seqs() == list(range(11, 21))  # exactly what seq <= 10 covers is gone
        assert o.acked == 10
        o.append(readings(1))  # an ack beyond the last seq handed out did not swallow new events
        assert o.seqs() == list(range(11, 22))


def test_when_full_the_oldest_are_dropped_and_counted_persistently(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1", max_bytes=20_000) as o:
        for i in range(50):
            o.append(readings(10, start=10 * i, pad=100))
        st = o.stats()
        assert st.bytes <= 20_000 and st.depth > 0
        assert st.dropped_full == 500 - st.depth
        assert o.seqs() == list(range(501 - st.depth, 501))  # the newest survive, in order
    with Outbox(tmp_path / "o.sqlite", "dev-1", max_bytes=20_000) as o:
        assert o.stats().dropped_full == 500 - st.depth and o.stats().dropped == st.dropped


def test_old_events_expire_and_are_counted(tmp_path: Path) -> None:
    now = [1000.0]
    with Outbox(tmp_path / "o.sqlite", "dev-1", max_age_s=60, clock=lambda: now[0]) as o:
        o.append(readings(3))
        now[0] += 30
        o.append(readings(2))
        now[0] += 31
        assert o.expire() == 3
        st = o.stats()
        assert (st.depth, st.dropped_age, o.seqs()) == (2, 3, [4, 5])


def test_a_reading_too_big_for_any_message_is_refused_and_counted(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", "dev-1") as o:
        huge = Reading("blob", {"x": "y" * wire.MAX_EVENTS_PAYLOAD}, 0)
        events = o.append([*readings(1), huge, *readings(1, start=1)])
        assert [e.seq for e in events] == [1, 2]  # no hole where the refused one was
        assert o.stats().dropped_oversize == 1
