"""Remote configuration: the retained ``vigil/<device>/config`` message a device reads on
connect (and whenever it changes)."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge import wire

__all__ = ["publish_config"]


def publish_config(host: str, port: int, device: str, config: dict[str, Any] | None, *,
                   username: str | None = None, password: str | None = None,
                   timeout_s: float = 10.0) -> None:
    """Publish ``config`` retained at QoS 1 (None clears it); returns once the broker has it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        payload = b"" if config is None else wire.encode_config(config)
        info = client.publish(wire.config_topic(device), payload, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"the MQTT broker at {host}:{port} did not take the config in {timeout_s}s")
    finally:
        client.disconnect()
        client.loop_stop()
