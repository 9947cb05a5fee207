"""Remote configuration: the retained ``vigil/<device>/config`` message a device reads on
connect (and whenever it changes)."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge import wire

__all__ = ["publish_config"]


def publish_config(host: str, port: int, device: str, config: dict[str, Any] | None, *,
                   username: str | None = None, password: str | None = None,
                   timeout_s: float = 10.0) -> None:
    """Publish ``config`` retained at QoS 1 (None clears it); returns once the broker has
    it. Raises ConnectionError when the broker refuses the login, TimeoutError when it
    does not answer."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, u: object, flags: object, reason: Any, props: object) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=10)
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise TimeoutError(f"the MQTT broker at {host}:{port} did not answer in {timeout_s}s")
        if refused:
            raise ConnectionError(f"the MQTT broker at {host}:{port} refused user {username!r}: {refused[0]} "
                                  "(publish as the bridge user: --username, --password-file)")
        payload = b"" if config is None else wire.encode_config(config)
        info = client.publish(wire.config_topic(device), payload, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"the MQTT broker at {host}:{port} did not take the config in {timeout_s}s")
    finally:
        client.disconnect()
        client.loop_stop()
