"""The server path as deployed: a real agent over TLS into Mosquitto running
deploy/mosquitto/vigil.conf, the bridge started with vigil-bridge.service's own command
line (paths and ports moved), into the log; the outbox empties only because the acks
came back through the same listeners and ACLs."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Producer

from tests.conftest import ROOT, BrokerProcess, free_port
from tests.deploy.conftest import Site, device_toml
from tests.deploy.unitfile import parse_unit
from tests.gateway.conftest import read_topic, wait_until

BRIDGE_UNIT = ROOT / "deploy" / "systemd" / "vigil-bridge.service"


def _outbox_depth(path: Path) -> int:
    if not path.exists():
        return -1
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def _metric(text: str, name: str) -> float:
    """The sum over labels of the sample ``name`` (e.g. ``x_total``) in Prometheus text."""
    values = [float(line.split()[-1]) for line in text.splitlines()
              if not line.startswith("#") and line.split("{")[0].split()[0] == name]
    assert values, f"no {name} in the metrics"
    return sum(values)


def bridge_argv(site: Site, bootstrap: str, password_file: Path, metrics_port: int) -> list[str]:
    """vigil-bridge.service's ExecStart with this test's addresses in the variables the
    unit reads from /etc/vigil/vigil.env, and this checkout's `vigil`."""
    argv = parse_unit(BRIDGE_UNIT).exec_start(extra_env={
        "VIGIL_BOOTSTRAP": bootstrap,
        "VIGIL_MQTT": f"127.0.0.1:{site.mosquitto.local_port}",
        "VIGIL_MQTT_PASSWORD_FILE": str(password_file),
    })
    assert argv[0] == "/opt/vigil/bin/vigil"
    argv = [sys.executable, "-m", "deploy.cli", *argv[1:]]
    argv[argv.index("--metrics-port") + 1] = str(metrics_port)  # 9108 may be taken here
    return argv


def test_an_agent_over_tls_reaches_the_log_through_the_deployed_bridge(
        site: Site, broker: BrokerProcess, tmp_path: Path) -> None:
    password_file = site.mosquitto.workdir / "bridge.password"  # written by `vigil devices bridge-user`
    metrics_port = free_port()
    bridge_log = open(tmp_path / "bridge.log", "ab")  # noqa: SIM115 - handed to the child
    bridge = subprocess.Popen(bridge_argv(site, broker.bootstrap, password_file, metrics_port),
                              cwd=ROOT, stdout=bridge_log, stderr=subprocess.STDOUT)
    bridge_log.close()

    device_dir = tmp_path / "truck-7"
    device_dir.mkdir()
    (device_dir / "mqtt.password").write_text(site.passwords["truck-7"] + "\n")
    (device_dir / "ca.crt").write_bytes(site.mosquitto.ca.read_bytes())
    outbox = tmp_path / "truck-7.outbox.sqlite"
    config = device_dir / "device.toml"
    config.write_text(device_toml("truck-7", "localhost", site.mosquitto.tls_port, outbox, rate=200, limit=300))
    agent_log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    agent = subprocess.Popen([sys.executable, "-m", "deploy.cli", "edge", "run", "--config", str(config)],
                             cwd=ROOT, stdout=agent_log, stderr=subprocess.STDOUT)
    agent_log.close()

    def logs() -> str:
        return (f"--- bridge\n{(tmp_path / 'bridge.log').read_text()[-3000:]}\n"
                f"--- agent\n{(tmp_path / 'agent.log').read_text()[-3000:]}\n"
                f"--- mosquitto\n{site.mosquitto.log()[-3000:]}")

    try:
        records = read_topic(broker.bootstrap, "telemetry", min_count=300, timeout=90)
        wait_until(lambda: _outbox_depth(outbox) == 0, 60, "the agent's outbox to empty")
        status = read_topic(broker.bootstrap, "device-status", min_count=1, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    finally:
        for proc in (agent, bridge):
            proc.send_signal(signal.SIGTERM)
        for proc in (agent, bridge):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    seqs = sorted({int(r.json()["seq"]) for r in records})  # type: ignore[call-overload]
    assert seqs == list(range(1, 301)), logs()
    assert {r.key for r in records} == {"truck-7"}
    assert any(r.key == "truck-7" and r.json()["state"] == "online" for r in status)
    assert _metric(metrics, "vigil_bridge_records_committed_total") >= 300
    assert _metric(metrics, "vigil_bridge_device_acks_total") >= 1


def _unit_argv(name: str, env: dict[str, str], replace: dict[str, str]) -> list[str]:
    """A unit's ExecStart with this test's values for its variables, paths replaced, and
    this checkout's `vigil`."""
    argv = parse_unit(ROOT / "deploy" / "systemd" / name).exec_start(extra_env=env)
    assert argv[0] == "/opt/vigil/bin/vigil"
    return [sys.executable, "-m", "deploy.cli", *(replace.get(a, a) for a in argv[1:])]


def _install_md_toml(first_line: str) -> str:
    text = (ROOT / "deploy" / "INSTALL.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if b.startswith(first_line)]
    assert len(blocks) == 1
    return str(blocks[0])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except OSError:
        return 0, b""


def _speeding(bootstrap: str, device: str) -> None:
    """40 s of GPS fixes of a vehicle at 30 m/s, as the bridge writes them to telemetry:
    above INSTALL.md's default_speed_limit (25 m/s), below the built-in one (33.3 m/s),
    so an overspeed alert shows that the processors run with that file."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    start = int(time.time() * 1000) - 40_000
    for i in range(40):
        event = {"device": device, "seq": i + 1, "ts": start + i * 1000, "kind": "gps",
                 "data": {"mode": 3, "lat": 52.0 + i * 0.0003, "lon": 13.0, "speed": 30.0}}
        producer.produce("telemetry", json.dumps(event).encode(), device.encode(), timestamp=event["ts"])
    assert producer.flush(30) == 0


def test_processors_and_api_run_from_their_units_and_an_alert_reaches_the_api(
        broker: BrokerProcess, tmp_path: Path) -> None:
    """The topics from create-topics.sh, the processors with INSTALL.md's processors.toml
    and the API, both started with their units' command lines: a vehicle above the
    configured limit for long enough is an overspeed alert in the API."""
    vigil = tmp_path / "vigil"
    vigil.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m deploy.cli \"$@\"\n")
    vigil.chmod(0o755)
    subprocess.run(["sh", str(ROOT / "deploy" / "kafka" / "create-topics.sh"), "--replication-factor", "1",
                    "--partitions", "2", "--bootstrap", broker.bootstrap],
                   env={"PATH": os.environ["PATH"], "VIGIL": str(vigil)}, check=True, capture_output=True,
                   timeout=120)
    processors_toml = tmp_path / "processors.toml"
    processors_toml.write_text(_install_md_toml("[kafka]"))
    api_port = free_port()
    alerts_db = tmp_path / "alerts.db"
    env = {"VIGIL_BOOTSTRAP": broker.bootstrap, "VIGIL_ALERTS_DB": str(alerts_db),
           "VIGIL_API": f"127.0.0.1:{api_port}"}
    commands = {
        "processors": _unit_argv("vigil-processors@.service", env,
                                 {"/etc/vigil/processors.toml": str(processors_toml)}),
        "api": _unit_argv("vigil-api.service", env, {}),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in commands.items():
        with open(tmp_path / f"{name}.log", "ab") as log:
            procs[name] = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def logs() -> str:
        return "\n".join(f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-3000:]}" for n in commands)

    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{api_port}/healthz")[0] == 200, 60, "the API")
        token = subprocess.run([sys.executable, "-m", "deploy.cli", "tokens", "--db", str(alerts_db), "create",
                                "--name", "test", "--scope", "read"], cwd=ROOT, capture_output=True,
                               text=True, check=True, timeout=60).stdout.strip()
        _speeding(broker.bootstrap, "truck-7")

        last: list[object] = []

        def overspeed() -> list[dict[str, object]]:
            status, body = _get(f"http://127.0.0.1:{api_port}/alerts", token)
            last[:] = [status, body[:2000]]
            if status != 200:
                return []
            return [a for a in json.loads(body)["items"]
                    if a["rule"] == "overspeed" and a["device"] == "truck-7"]

        try:
            wait_until(lambda: bool(overspeed()), 90, "the overspeed alert in the API")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; GET /alerts: {last}") from None
        status, metrics = _get(f"http://127.0.0.1:{api_port}/metrics", token)
        assert status == 200 and b"vigil_api_requests" in metrics
        assert _get(f"http://127.0.0.1:{api_port}/metrics")[0] == 401  # not without a token
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited\n{logs()}"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
