"""Gateway bench: events/s through the bridge, the ceiling measured in the same run, and
the time from publish to device ack.

    python -m tests.perf.bench_gateway [--events 200000] [--batch 100] [--devices 4]

1. ceiling: devices publish ``--events`` 200-byte events in batches to a real Mosquitto and
   a bare paho subscriber (QoS 1, automatic acks) counts them: the rate MQTT alone gives;
2. bridge: the same load through ``vigil gateway bridge`` into a real ``vigil broker``
   (acks=all, fsync), timed until every device has its last seq acked;
3. latency: a paced run (``--paced-rate`` batches/s) records, per batch, the time from
   publish to the device ack that covers it: p50/p99.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge import wire
from gateway.registry import Registry
from tests.conftest import BrokerProcess
from tests.gateway.conftest import BridgeProcess, Device, SecureMosquitto, Site


class TimedDevice(Device):
    """A Device that remembers when each batch went out and when its ack came back."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.sent_at: dict[int, float] = {}  # last seq of a batch -> publish time
        self.latencies: list[float] = []

    def _publish_range(self, first: int, last: int) -> None:
        for start in range(first, last + 1, self.batch):
            end = min(start + self.batch - 1, last)
            self.sent_at.setdefault(end, time.monotonic())
            self.publish_raw(wire.encode_events(self.id, self.events(start, end)))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        super()._on_message(client, userdata, msg)
        now = time.monotonic()
        with self.lock:
            for last in [s for s in self.sent_at if s <= self.acked]:
                self.latencies.append(now - self.sent_at.pop(last))


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def _publish_all(devices: list[Device], per_device: int) -> None:
    threads = [threading.Thread(target=d.send, args=(per_device,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--paced-rate", type=float, default=50, help="batches/s in the latency run")
    ap.add_argument("--paced-seconds", type=float, default=10)
    args = ap.parse_args()
    per_device = args.events // args.devices
    total = per_device * args.devices

    with tempfile.TemporaryDirectory(prefix="vigil-bench-gw-") as tmp_s:
        tmp = Path(tmp_s)
        mosq = SecureMosquitto(tmp / "mqtt").start()
        broker = BrokerProcess(tmp / "broker-data").start()
        bridge: BridgeProcess | None = None
        try:
            registry = Registry(tmp / "devices.db", mosq.files)
            pw = tmp / "bridge.password"
            pw.write_text(registry.set_bridge_user("vigil-bridge") + "\n")
            names = [f"bench-{i}" for i in range(args.devices)]
            passwords = {n: registry.add(n, "vehicle") for n in names}
            site = Site(mosq, registry, pw, passwords)
            time.sleep(0.5)
            # 1. the ceiling: a bare subscriber
            got = [0]
            done = threading.Event()

            def on_msg(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
                got[0] += len(wire.decode_events(bytes(m.payload)).events)
                if got[0] >= total:
                    done.set()

            sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-ceiling")
            sub.username_pw_set("vigil-bridge", pw.read_text().strip())
            sub.on_message = on_msg
            sub.connect("127.0.0.1", mosq.port)
            sub.subscribe("vigil/+/events", qos=1)
            sub.loop_start()
            time.sleep(0.5)
            devs = [Device(mosq.port, n, passwords[n], batch=args.batch, event_bytes=150).start() for n in names]
            size = len(json.dumps(devs[0].events(1, 1)[0].to_json(), separators=(",", ":")))
            t0 = time.monotonic()
            _publish_all(devs, per_device)
            done.wait(600)
            ceiling = got[0] / (time.monotonic() - t0)
            sub.disconnect()
            sub.loop_stop()
            for d in devs:
                d.stop()
            # 2. through the bridge
            bridge = BridgeProcess(site, broker.bootstrap, tmp).start()
            tdevs = [TimedDevice(mosq.port, f"{n}", passwords[n], batch=args.batch, event_bytes=150,
                                 resend_after=30) for n in names]
            for d in tdevs:
                d.next_seq = per_device + 1  # carry on after the ceiling run's seqs
                d.start()
            t0 = time.monotonic()
            _publish_all(tdevs, per_device)
            for d in tdevs:
                d.settle(600)
            bridged = total / (time.monotonic() - t0)
            loaded = [x for d in tdevs for x in d.latencies]
            # 3. latency at a moderate pace
            for d in tdevs:
                d.latencies.clear()
            end = time.monotonic() + args.paced_seconds
            while time.monotonic() < end:
                for d in tdevs:
                    d.send(args.batch)
                time.sleep(args.devices / args.paced_rate)
            for d in tdevs:
                d.settle(60)
                d.stop()
            paced = [x for d in tdevs for x in d.latencies]
        finally:
            if bridge is not None:
                bridge.stop()
            broker.stop()
            mosq.stop()
    print(f"events: {total} x {size} B in batches of {args.batch}, {args.devices} devices")
    print(f"ceiling (bare paho subscriber, same Mosquitto): {ceiling:,.0f} events/s")
    print(f"through the bridge into the log (acks=all):     {bridged:,.0f} events/s "
          f"({bridged / ceiling:.0%} of the ceiling)")
    print(f"publish -> device ack under full load: p50 {_pct(loaded, 50) * 1000:.0f} ms, "
          f"p99 {_pct(loaded, 99) * 1000:.0f} ms")
    print(f"publish -> device ack at {args.paced_rate:.0f} batches/s: p50 {_pct(paced, 50) * 1000:.1f} ms, "
          f"p99 {_pct(paced, 99) * 1000:.1f} ms ({len(paced)} batches)")


if __name__ == "__main__":
    main()
