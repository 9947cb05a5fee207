"""`vigil up`: run the appliance on one machine, supervised, with data under ./var.

It runs what exists: the log broker (with Vigil's topics), an MQTT broker (a system
Mosquitto if installed, else the embedded one), the gateway bridge, the stream
processors (rules configured for the simulated town in ``var/processors.toml``), and
simulated devices through real agents, and the HTTP API (with a read+ack token for the
box's own dashboard); ``--dash`` (``make demo``) runs the dashboard in the terminal too.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vigil.deploy")

# name -> (partitions, configs)
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "telemetry": (6, {}),
    "telemetry.rejected": (1, {}),
    "alerts": (3, {}),
    "device-state": (6, {"cleanup.policy": "compact"}),
    "device-status": (1, {"cleanup.policy": "compact"}),
}


def processors_conf(var: Path) -> Path:
    """The processors' rules for the simulated town (kept if the user edited it): its
    zones as geofences, 50 km/h in the town centre, 100 km/h elsewhere."""
    from edge.sim.vehicle import AREAS, TOWN_CENTRE_ZONE

    path = var / "processors.toml"
    if path.exists():
        return path
    lines = ["# Written by `vigil up` for the simulated devices; see processors/config.py.",
             "[vehicles]", f"default_speed_limit = {100 / 3.6:.2f}  # m/s (100 km/h)",
             "overspeed_duration_s = 5", "idle_duration_s = 60", ""]
    for area in AREAS:
        lines += ["[[vehicles.zones]]", f'name = "{area.name}"', f"lat = {area.lat}", f"lon = {area.lon}",
                  f"radius_m = {area.radius_m}"]
        if area is TOWN_CENTRE_ZONE:
            lines.append(f"speed_limit = {50 / 3.6:.2f}  # 50 km/h")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


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
    ready_text: str | None = None  # in its log once it is ready for the children after it
    log_offset: int = 0  # where this run's log begins (the file outlives runs)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.log_offset = out.tell()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        if self.ready_text is None:
            return True
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return self.ready_text.encode() in f.read()
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _say(message: str) -> None:
    print(message, file=sys.stderr)


class Supervisor:
    def __init__(self, children: list[Child], report: Callable[[str], None] = _say) -> None:
        self.children = children
        self.stopping = False
        self.report = report

    def start(self, ready_timeout: float = 30.0) -> None:
        """Start the children in order; one with a ``ready_text`` holds back those after it
        until it says it is ready (the bridge must subscribe before devices publish, or
        their first messages reach nobody and wait for the agents' ack timeout)."""
        for child in self.children:
            child.start()
            deadline = time.monotonic() + ready_timeout
            while not child.ready():
                if time.monotonic() > deadline or (child.proc is not None and child.proc.poll() is not None):
                    self.report(f"vigil up: {child.name} did not say it was ready; going on (log: {child.log_path})")
                    break
                time.sleep(0.1)

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
                self.report(f"vigil up: {child.name} exited with {code}; restarting in {delay:.1f}s "
                            f"(log: {child.log_path})")
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
                self.report(f"vigil up: {child.name} restarted")

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


def find_mosquitto() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def mosquitto_conf(var: Path, port: int) -> Path:
    """A Mosquitto config for the box: devices authenticate with the registry's password
    file, the ACL keeps each device on its own topics."""
    mqtt = var / "mqtt"
    mqtt.mkdir(parents=True, exist_ok=True)
    conf = mqtt / "mosquitto.conf"
    conf.write_text(
        # stay the user who runs the demo (as root, Mosquitto would switch to "mosquitto",
        # who cannot write under ./var)
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {mqtt / 'passwd'}\n"
        f"acl_file {mqtt / 'acl'}\n"
        f"pid_file {mqtt / 'mosquitto.pid'}\n"
        "persistence true\n"
        f"persistence_location {mqtt}/\n"
        "max_queued_messages 100000\n"
        "set_tcp_nodelay true\n"
    )
    return conf


def provision_simulated_devices(var: Path, vehicles: int, patients: int) -> tuple[Path, Path]:
    """Register the simulated devices and the bridge in the device registry (writing the
    Mosquitto password and ACL files); returns (device credentials file, bridge password
    file). Passwords are shown once by the registry, so the demo keeps them in var/."""
    from gateway import MosquittoFiles, Registry

    mqtt = var / "mqtt"
    creds_path = var / "edge-sim" / "credentials.json"
    creds: dict[str, str] = json.loads(creds_path.read_text()) if creds_path.exists() else {}
    registry_path = var / "gateway" / "registry.db"
    wanted = [f"veh-{i + 1:03d}" for i in range(vehicles)] + [f"bed-{i + 1:03d}" for i in range(patients)]
    if any(d not in creds for d in wanted) and registry_path.exists():
        registry_path.unlink()  # a demo registry whose passwords we lost: start it again
        creds = {}
    # Mosquitto starts after this and reads the files then: no reload (and no signal to
    # whatever PID a stale pid file from an earlier run names).
    registry = Registry(registry_path, MosquittoFiles(mqtt / "passwd", mqtt / "acl"))
    logging.getLogger("vigil.gateway").setLevel(logging.ERROR)  # "not asked to reload" is expected
    for device in wanted:
        if device not in creds:
            kind = "patient" if device.startswith("bed-") else "vehicle"
            creds[device] = registry.add(device, kind, name=f"simulated {kind} {device}")
    bridge_password = registry.set_bridge_user("vigil-bridge")
    creds_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((creds_path, json.dumps(creds)), (var / "gateway" / "bridge.password", bridge_password)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(text)
    return creds_path, var / "gateway" / "bridge.password"


def demo_token(var: Path, python: str, db: Path) -> str:
    """A read+ack token for the box's own dashboard, made once and kept (mode 0600) in
    ``var/gateway/demo.token``."""
    path = var / "gateway" / "demo.token"
    if path.exists() and db.exists():  # (a new alert store has no tokens: make one again)
        return path.read_text().strip()
    done = subprocess.run([python, "-m", "deploy.cli", "tokens", "--db", str(db), "create", "--name", "vigil-up",
                           "--scope", "read", "--scope", "ack"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not create the dashboard's token: {done.stderr.strip()}")
    token = done.stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def up(var: Path, broker_port: int = 9092, mqtt_port: int = 1883, vehicles: int = 5, patients: int = 3,
       speedup: float = 1.0, mqtt_broker: str = "auto", api_port: int = 8000, dash: bool = False,
       incidents: bool = True) -> int:
    var = var.resolve()
    bootstrap = f"127.0.0.1:{broker_port}"
    mqtt_address = f"127.0.0.1:{mqtt_port}"
    python = sys.executable
    logs = var / "logs"
    api_url = f"http://127.0.0.1:{api_port}"
    alerts_db = var / "gateway" / "alerts.db"
    children = [
        Child("broker", [python, "-m", "deploy.cli", "broker", "--listen", bootstrap,
                         "--data-dir", str(var / "broker")], logs / "broker.log"),
    ]
    mosquitto = find_mosquitto() if mqtt_broker in ("auto", "mosquitto") else None
    if mqtt_broker == "mosquitto" and mosquitto is None:
        print("vigil up: --mqtt-broker mosquitto, but mosquitto is not installed", file=sys.stderr)
        return 1
    creds, bridge_password = provision_simulated_devices(var, vehicles, patients)
    if mosquitto is not None:
        mqtt_child = Child("mosquitto", [mosquitto, "-c", str(mosquitto_conf(var, mqtt_port))],
                           logs / "mosquitto.log")
        mqtt_version = "5"
    else:  # the embedded broker (amqtt, MQTT 3.1.1), checking the same registry
        mqtt_child = Child("mqtt", [python, "-m", "deploy.cli", "gateway", "mqtt", "--listen", mqtt_address,
                                    "--registry", str(var / "gateway" / "registry.db")], logs / "mqtt.log")
        mqtt_version = "3.1.1"
    children += [
        mqtt_child,
        Child("bridge", [python, "-m", "deploy.cli", "-v", "gateway", "bridge", "--mqtt", mqtt_address,
                         "--bootstrap", bootstrap, "--username", "vigil-bridge", "--mqtt-version", mqtt_version,
                         "--password-file", str(bridge_password), "--client-id", "vigil-up-bridge"],
              logs / "bridge.log", ready_text="mqtt connected"),
        Child("processors", [python, "-m", "deploy.cli", "processors", "--bootstrap", bootstrap,
                             "--config", str(processors_conf(var)), "--instance-id", "vigil-up-processors",
                             "--client-id", "vigil-up-processors"], logs / "processors.log"),
        Child("api", [python, "-m", "deploy.cli", "gateway", "api", "--db", str(alerts_db), "--bootstrap", bootstrap,
                      "--listen", f"127.0.0.1:{api_port}"], logs / "api.log"),
        Child("devices", [python, "-m", "deploy.cli", "edge", "simulate", "--vehicles", str(vehicles),
                          "--patients", str(patients), "--speedup", str(speedup), "--mqtt", mqtt_address,
                          "--credentials", str(creds), "--outbox-dir", str(var / "edge-sim"),
                          *(["--incidents"] if incidents else [])],
              logs / "devices.log"),
    ]
    token = demo_token(var, python, alerts_db)
    up_log = logs / "up.log"

    def report(message: str) -> None:  # under the dashboard the terminal is not ours
        if dash:
            with open(up_log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
        else:
            _say(message)

    sup = Supervisor(children, report)
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sup.start()
    try:
        _ensure_topics(bootstrap)
        print(f"Vigil is up (data in {var}, logs in {logs}):")
        print(f"  log broker (Kafka protocol)  {bootstrap}")
        print(f"  topics                       {', '.join(TOPICS)}")
        if mosquitto is not None:
            print(f"  MQTT broker (Mosquitto)      {mqtt_address}  ({mosquitto})")
        else:
            print(f"  MQTT broker (embedded)       {mqtt_address}  (install mosquitto for more throughput)")
        print("  gateway bridge               MQTT vigil/+/events -> telemetry, acks to devices")
        print(f"  stream processors            telemetry -> alerts, device-state  (rules: {var / 'processors.toml'})")
        print(f"  HTTP API                     {api_url}  (docs: {api_url}/docs)")
        print(f"  read+ack token               {token}  (kept in {var / 'gateway' / 'demo.token'})")
        print(f"  simulated devices            {vehicles} vehicles, {patients} patients (real agents)")
        vigil = Path(python).parent / "vigil"
        cmd = str(vigil) if vigil.exists() else f"{python} -m deploy.cli"
        print("Try, in another terminal:")
        print(f"  {cmd} consume --topic alerts --print-key --bootstrap-server {bootstrap}")
        print(f"  {cmd} dash --api {api_url} --token {token}")
        print(f"  curl -H 'Authorization: Bearer {token}' {api_url}/alerts")
        print(f"  {cmd} topics describe --bootstrap-server {bootstrap}")
        if dash:
            return _with_dashboard(sup, stop, python, api_url, token, up_log)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop["flag"]:
            sup.check()
            time.sleep(0.2)
    finally:
        print("vigil up: stopping", file=sys.stderr)
        sup.stop()
    return 0


def _with_dashboard(sup: Supervisor, stop: dict[str, bool], python: str, api_url: str, token: str,
                    up_log: Path) -> int:
    """The dashboard in this terminal while the supervisor keeps the rest running; quitting
    the dashboard stops everything."""
    print(f"Starting the dashboard (quit it to stop Vigil; supervisor messages go to {up_log})", flush=True)
    time.sleep(1.0)
    dashboard = subprocess.Popen([python, "-m", "deploy.cli", "dash", "--api", api_url, "--token", token])
    try:
        while not stop["flag"] and dashboard.poll() is None:
            sup.check()
            time.sleep(0.2)
    finally:
        if dashboard.poll() is None:
            dashboard.terminate()
            try:
                dashboard.wait(5)
            except subprocess.TimeoutExpired:
                dashboard.kill()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run the whole appliance on this machine (supervised)")
    p.add_argument("--var", default="var", help="where data and logs go (default ./var)")
    p.add_argument("--broker-port", type=int, default=9092, help="Kafka protocol port (default 9092)")
    p.add_argument("--mqtt-port", type=int, default=1883, help="MQTT port (default 1883)")
    p.add_argument("--vehicles", type=int, default=5, help="simulated vehicles (default 5)")
    p.add_argument("--patients", type=int, default=3, help="simulated patients (default 3)")
    p.add_argument("--speedup", type=float, default=1.0, help="simulated seconds per second (default 1)")
    p.add_argument("--mqtt-broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                   help="Mosquitto if installed (auto, the default), or the embedded one")
    p.add_argument("--api-port", type=int, default=8000, help="HTTP API port (default 8000)")
    p.add_argument("--dash", action="store_true",
                   help="run the terminal dashboard here too; quitting it stops everything (make demo)")
    p.add_argument("--incidents", action=argparse.BooleanOptionalAction, default=True,
                   help="the simulators script incidents every 5 simulated minutes: a speeding vehicle, a "
                        "geofence crossing, a deteriorating patient, a probe falling off (default on)")
    p.set_defaults(func=lambda args: up(Path(args.var), args.broker_port, args.mqtt_port, args.vehicles,
                                        args.patients, args.speedup, args.mqtt_broker, args.api_port,
                                        args.dash, args.incidents))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(up(Path("var")))
