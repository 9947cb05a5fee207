"""The server path as deployed: a real agent over TLS into Mosquitto running
deploy/mosquitto/vigil.conf, the bridge started with vigil-bridge.service's own command
line (paths and ports moved), into the log; the outbox empties only because the acks
came back through the same listeners and ACLs."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

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
