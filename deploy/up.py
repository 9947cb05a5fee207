"""`vigil up`: run the appliance on one machine, supervised, with data under ./var.

Today it runs what exists: the log broker, with Vigil's topics created. Each part joins
the supervisor as it is built (MQTT broker, gateway, processors, API, simulators).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vigil.deploy")

# name -> (partitions, configs)
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "telemetry": (6, {}),
    "telemetry.rejected": (1, {}),
    "alerts": (3, {}),
    "device-state": (3, {"cleanup.policy": "compact"}),
}


@dataclass
class Child:
    """A supervised process: restarted with backoff when it dies."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False

    def start(self) -> None:
        for child in self.children:
            child.start()

    def check(self) -> None:
        """Restart any child that died, with exponential backoff, and say so."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                code = child.proc.returncode
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                if now - child.started_at > 60:
                    delay = 0.5
                child.next_start = now + delay
                print(f"vigil up: {child.name} exited with {code}; restarting in {delay:.1f}s "
                      f"(log: {child.log_path})", file=sys.stderr)
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
                print(f"vigil up: {child.name} restarted", file=sys.stderr)

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            child.stop()


def _ensure_topics(bootstrap: str, timeout: float = 20) -> None:
    from broker.admin import create_topic

    deadline = time.monotonic() + timeout
    for name, (partitions, configs) in TOPICS.items():
        while True:
            try:
                create_topic(bootstrap, name, partitions, 1, configs, if_not_exists=True)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc
                time.sleep(0.3)


def up(var: Path, broker_port: int = 9092) -> int:
    var = var.resolve()
    bootstrap = f"127.0.0.1:{broker_port}"
    python = sys.executable
    children = [
        Child("broker", [python, "-m", "deploy.cli", "broker", "--listen", bootstrap,
                         "--data-dir", str(var / "broker")], var / "logs" / "broker.log"),
    ]
    sup = Supervisor(children)
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sup.start()
    try:
        _ensure_topics(bootstrap)
        print(f"Vigil is up (data in {var}, logs in {var / 'logs'}):")
        print(f"  log broker (Kafka protocol)  {bootstrap}")
        print(f"  topics                       {', '.join(TOPICS)}")
        vigil = Path(python).parent / "vigil"
        cmd = str(vigil) if vigil.exists() else f"{python} -m deploy.cli"
        print("Try, in another terminal:")
        print(f"  echo 'dev-1:hello' | {cmd} produce --topic telemetry --key-separator : --bootstrap-server {bootstrap}")
        print(f"  {cmd} consume --topic telemetry --from-beginning --print-key --bootstrap-server {bootstrap}")
        print(f"  {cmd} topics describe --bootstrap-server {bootstrap}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop["flag"]:
            sup.check()
            time.sleep(0.2)
    finally:
        print("vigil up: stopping", file=sys.stderr)
        sup.stop()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run the whole appliance on this machine (supervised)")
    p.add_argument("--var", default="var", help="where data and logs go (default ./var)")
    p.add_argument("--broker-port", type=int, default=9092, help="Kafka protocol port (default 9092)")
    p.set_defaults(func=lambda args: up(Path(args.var), args.broker_port))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(up(Path("var")))
