"""Simulated devices published through real agents: ``vigil edge simulate --mqtt``.

Each simulated device gets a real ``Agent`` (sampling, SQLite outbox, MQTT publisher with
acks) on its own thread, reading the simulated hardware through the ordinary drivers —
the same path a Raspberry Pi takes, many times in one process. Used by the one-box demo
(``vigil up``) and load tests.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from edge.agent import Agent
from edge.config import AgentConfig, Config, DeviceConfig, MqttConfig, OutboxConfig, SensorConfig
from edge.sim import Simulation

__all__ = ["agent_config_for", "load_credentials", "run_simulated_agents"]

log = logging.getLogger("vigil.edge")


def load_credentials(path: str | Path | None) -> dict[str, str]:
    """A JSON object device id -> MQTT password (what ``vigil up`` writes), or none."""
    if path is None:
        return {}
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ValueError(f"{path}: expected a JSON object of device id -> password")
    return {str(k): v for k, v in doc.items()}


def agent_config_for(device_id: str, kind: str, sensor_types: Mapping[str, str], *, host: str, port: int,
                     password: str | None, outbox_dir: Path) -> Config:
    """The config a real device of this shape would carry."""
    return Config(
        device=DeviceConfig(id=device_id, kind=kind),
        mqtt=MqttConfig(host=host, port=port, username=device_id if password else None, password=password,
                        reconnect_min_s=0.5, reconnect_max_s=10.0, status_interval_s=15.0),
        outbox=OutboxConfig(path=outbox_dir / f"{device_id}.outbox.sqlite"),
        agent=AgentConfig(),
        sensors=tuple(SensorConfig(name=name, type=type_, index=i)
                      for i, (name, type_) in enumerate(sensor_types.items())),
    )


def run_simulated_agents(sim: Simulation, *, host: str, port: int, credentials: Mapping[str, str],
                         outbox_dir: Path, stop: threading.Event) -> None:
    """Run one agent per simulated device until ``stop`` is set."""
    outbox_dir.mkdir(parents=True, exist_ok=True)
    agents: list[Agent] = []
    threads: list[threading.Thread] = []
    sim.start()
    try:
        for device in sim.devices:
            kind = "patient" if device.device_id.startswith("bed-") else "vehicle"
            config = agent_config_for(device.device_id, kind, device.sensor_types, host=host, port=port,
                                      password=credentials.get(device.device_id), outbox_dir=outbox_dir)
            agent = Agent(config, sensors=device.sensors)
            agents.append(agent)
            thread = threading.Thread(target=agent.run, args=(stop,), name=f"agent-{device.device_id}",
                                      daemon=True)
            thread.start()
            threads.append(thread)
        log.info("%d simulated device(s) publishing to %s:%d", len(agents), host, port)
        stop.wait()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        sim.stop()
        sim.close()
