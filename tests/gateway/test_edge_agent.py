"""The real edge agent (`vigil edge run`, its SQLite outbox, the counter test sensor)
through Mosquitto and the bridge into the log: the outbox empties only because the
bridge's acks say the log has every event."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, BrokerProcess
from tests.gateway.conftest import BridgeProcess, Site, read_topic, wait_until


def _outbox_depth(path: Path) -> int:
    if not path.exists():
        return -1
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def test_a_real_agent_empties_its_outbox_into_the_log(
        site: Site, broker: BrokerProcess, bridge: BridgeProcess, tmp_path: Path) -> None:
    password = site.add_device("truck-7")
    (tmp_path / "truck-7.secret").write_text(password + "\n")
    config = tmp_path / "truck-7.toml"
    config.write_text(f"""
[device]
id = "truck-7"
kind = "vehicle"

[mqtt]
host = "127.0.0.1"
port = {site.mosquitto.port}
username = "truck-7"
password_file = "truck-7.secret"
keepalive = 10
reconnect_min_s = 0.1
reconnect_max_s = 0.5
ack_timeout_s = 5

[outbox]
path = "truck-7.outbox.sqlite"

[agent]
poll_interval_s = 0.02
sensor_modules = ["tests.edge.counter_sensor"]

[[sensors]]
name = "counter"
type = "counter"
rate = 500
limit = 1000
period_s = 0
deadband = 0
""")
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    agent = subprocess.Popen([sys.executable, "-m", "deploy.cli", "edge", "run", "--config", str(config)],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    outbox = tmp_path / "truck-7.outbox.sqlite"
    try:
        records = read_topic(broker.bootstrap, "telemetry", min_count=1000, timeout=60)
        wait_until(lambda: _outbox_depth(outbox) == 0, 30, "the agent's outbox to empty")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
    seqs = [int(r.json()["seq"]) for r in records]  # type: ignore[call-overload]
    assert sorted(set(seqs)) == list(range(1, 1001)), (tmp_path / "agent.log").read_text()[-2000:]
    assert {r.key for r in records} == {"truck-7"}
    assert all(r.headers["kind"] == b"counter" for r in records)
