"""SIGKILL the agent process while it drains a backlog, start it again: nothing is lost and
seq goes on increasing (no seq is ever given to two readings)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT
from tests.edge.conftest import FakeGateway, Mosquitto, device_toml, wait_until


@contextmanager
def agent_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "-v", "edge", "run", "--config", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def test_sigkill_mid_drain_then_restart_loses_nothing_and_never_reuses_a_seq(
        tmp_path: Path, mosquitto: Mosquitto, gateway: FakeGateway) -> None:
    first = 3000
    config = device_toml(tmp_path, "truck-9", mosquitto.port, rate=3000, limit=first, batch_max_events=10,
                         inflight_batches=1, ack_timeout_s=0.3, status_interval_s=0.2)
    log = tmp_path / "agent.log"
    gateway.acking = False  # a backlog builds up while the gateway does not ack
    with agent_process(config, log) as proc:
        wait_until(lambda: (s := gateway.statuses.get("truck-9")) is not None and s.state == "online"
                   and s.extra["sensors"]["counter"]["counted"] == first and s.outbox_depth == first,
                   what="the whole first run stored")
        gateway.acking = True  # the drain starts...
        wait_until(lambda: len(set(gateway.seqs("truck-9"))) >= 300, what="the drain under way")
        proc.send_signal(signal.SIGKILL)  # ...and the agent dies in the middle of it
        proc.wait(10)
    received_before = set(gateway.seqs("truck-9"))
    assert len(received_before) < first, "killed mid-drain"
    wait_until(lambda: gateway.statuses["truck-9"].state == "offline", what="the last will")

    second = 500
    config.write_text(config.read_text().replace(f"limit = {first}", f"limit = {second}"))
    with agent_process(config, log) as proc:
        wait_until(lambda: (s := gateway.statuses.get("truck-9")) is not None and s.state == "online"
                   and s.extra["sensors"]["counter"]["counted"] == second and s.outbox_depth == 0,
                   timeout=30, what="the second run drained")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # a clean shutdown on SIGTERM
    assert gateway.statuses["truck-9"].state == "offline"

    copies = gateway.copies("truck-9")
    by_seq: dict[int, set[tuple[int, int]]] = {}
    for c in copies:
        by_seq.setdefault(c.seq, set()).add((int(c.data["boot"]), int(c.data["n"])))  # type: ignore[call-overload]
    assert all(len(v) == 1 for v in by_seq.values()), "a seq was given to two readings"
    top = max(by_seq)
    assert sorted(by_seq) == list(range(1, top + 1)), "every stored event arrived"
    runs: dict[int, list[tuple[int, int]]] = {}
    for seq in sorted(by_seq):
        (boot, n), = by_seq[seq]
        runs.setdefault(boot, []).append((seq, n))
    assert len(runs) == 2
    (a, b) = runs.values()
    assert [n for _, n in a] == list(range(first)) and [n for _, n in b] == list(range(second))
    assert a[-1][0] < b[0][0], "the second run's seqs continue after the first's"
