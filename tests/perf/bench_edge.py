"""Edge agent benchmarks, run by hand: `python tests/perf/bench_edge.py [--json PATH]`.

Everything real on loopback: Debian's mosquitto (started here on a free port, stopped by
PID), the agent as its own process (`python -m deploy.cli edge run`), and a fake gateway
(paho, in this process) that acks every batch with its last seq, as the real gateway will.
The sensors are the test suite's counter sensors (tests/edge/counter_sensor.py): the
point is the agent's own cost (sampling, SQLite outbox with synchronous=FULL, MQTT), not a
driver's.

Measures:
- RSS of an agent running 5 sensors (5 x 10 readings/s), after it settled;
- events/s one agent publishes and gets acked: the sensor rate is raised step by step
  until the acked rate falls behind (sensor -> sampling -> outbox -> MQTT -> ack);
- the drain rate of an outbox holding 100,000 events when the gateway comes back;
- CPU seconds (user+sys) of the agent process per 1,000 events, in the last two phases.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge.outbox import Outbox  # noqa: E402
from edge.sensors.base import Reading  # noqa: E402
from tests.edge.conftest import FakeGateway, Mosquitto, device_toml  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def agent(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "edge", "run", "--config", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.01)


FIVE_SENSORS = "".join(f"""
[[sensors]]
name = "c{i}"
type = "counter"
rate = 10
period_s = 0
deadband = 0
""" for i in range(1, 5))


def bench_rss(tmp: Path, port: int, gw: FakeGateway) -> dict[str, float]:
    config = device_toml(tmp, "rss-1", port, rate=10, extra_sensors=FIVE_SENSORS, status_interval_s=1)
    with agent(config, tmp / "rss.log") as proc:
        wait(lambda: len(gw.seqs("rss-1")) >= 100, 30)
        time.sleep(5)
        rss = rss_mib(proc.pid)
        n = len(set(gw.seqs("rss-1")))
    return {"rss_mib_5_sensors": round(rss, 1), "rss_events": n}


def run_at(tmp: Path, port: int, gw: FakeGateway, rate: int, seconds: float) -> tuple[float, float]:
    """An agent whose sensor produces ``rate`` readings/s: (acked events/s, CPU s per 1,000)."""
    device = f"tput-{rate}"
    config = device_toml(tmp, device, port, rate=rate, batch_max_events=500, status_interval_s=5)
    with agent(config, tmp / f"{device}.log") as proc:
        wait(lambda: len(gw.seqs(device)) >= min(rate, 2000), 30)  # warmed up
        n0, c0, t0 = len(set(gw.seqs(device))), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        n1, c1, t1 = len(set(gw.seqs(device))), cpu_seconds(proc.pid), time.monotonic()
    events = max(1, n1 - n0)
    return events / (t1 - t0), (c1 - c0) / events * 1000


def bench_throughput(tmp: Path, port: int, gw: FakeGateway, seconds: float) -> dict[str, float]:
    """Raise the sensor rate until the acked rate falls behind it: the highest kept up with."""
    best_rate, best_cpu = 0.0, float("nan")
    typical_cpu = float("nan")
    for rate in (1000, 4000, 8000, 16000, 32000, 48000, 64000, 96000, 128000):
        acked, cpu = run_at(tmp, port, gw, rate, seconds)
        print(f"  sensor {rate:>6}/s: acked {acked:>8.0f}/s, {cpu:.4f} CPU s per 1,000", file=sys.stderr)
        if rate == 1000:
            typical_cpu = cpu
        if acked < 0.95 * rate:
            break
        best_rate, best_cpu = acked, cpu
    return {"publish_events_per_s": round(best_rate), "publish_cpu_s_per_1000": round(best_cpu, 4),
            "cpu_s_per_1000_at_1000_per_s": round(typical_cpu, 4)}


def bench_drain(tmp: Path, port: int, gw: FakeGateway, count: int) -> dict[str, float]:
    config = device_toml(tmp, "drain-1", port, rate=1, limit=0, batch_max_events=500)
    box = Outbox(tmp / "drain-1.outbox.sqlite", "drain-1")
    t = time.monotonic()
    for i in range(0, count, 1000):  # as the agent stores them: a transaction per tick
        box.append([Reading("gps", {"lat": 52.0 + j * 1e-6, "lon": 4.0, "speed": 13.9, "track": 90.0},
                            1_764_072_000_000 + j) for j in range(i, min(count, i + 1000))])
    fill_s = time.monotonic() - t
    box.close()
    with agent(config, tmp / "drain.log") as proc:
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        wait(lambda: len(gw.seqs("drain-1")) >= count, 600)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss = rss_mib(proc.pid)
    return {"drain_events": count, "drain_seconds": round(t1 - t0, 2),
            "drain_events_per_s": round(count / (t1 - t0)),
            "drain_cpu_s_per_1000": round((c1 - c0) / count * 1000, 4),
            "drain_rss_mib": round(rss, 1), "outbox_fill_events_per_s": round(count / fill_s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each throughput step")
    ap.add_argument("--drain-events", type=int, default=100_000)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-edge-") as d:
        tmp = Path(d)
        mq = Mosquitto(tmp / "mqtt").start()
        gw = FakeGateway(mq.port).start()
        try:
            results: dict[str, float] = {}
            results |= bench_rss(tmp, mq.port, gw)
            results |= bench_throughput(tmp, mq.port, gw, args.seconds)
            results |= bench_drain(tmp, mq.port, gw, args.drain_events)
        finally:
            gw.stop()
            mq.stop()
    rows = [
        ("agent RSS, 5 sensors", f"{results['rss_mib_5_sensors']:.1f} MiB"),
        ("events/s published and acked, sustained", f"{results['publish_events_per_s']:,}"),
        ("CPU s per 1,000 events at that rate", f"{results['publish_cpu_s_per_1000']:.4f}"),
        ("CPU s per 1,000 events at 1,000 events/s", f"{results['cpu_s_per_1000_at_1000_per_s']:.4f}"),
        (f"outbox drain, {results['drain_events']:,} buffered",
         f"{results['drain_events_per_s']:,} events/s ({results['drain_seconds']} s)"),
        ("CPU s per 1,000 events (drain)", f"{results['drain_cpu_s_per_1000']:.4f}"),
        ("agent RSS after the drain", f"{results['drain_rss_mib']:.1f} MiB"),
        ("outbox append (1,000 per transaction)", f"{results['outbox_fill_events_per_s']:,} events/s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'edge agent (counter sensors, mosquitto + fake gateway on loopback)':<{width}}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
