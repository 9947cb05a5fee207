"""Vigil gateway: the MQTT -> log bridge and the device registry.

What other parts may use:

* ``Bridge`` / ``BridgeConfig`` (``vigil gateway bridge``): ``vigil/+/events`` from MQTT
  into the ``telemetry`` topic of any Kafka-protocol log, refusals into
  ``telemetry.rejected``, device acks on ``vigil/<id>/ack``;
* ``Registry`` / ``MosquittoFiles`` (``vigil devices ...``): devices, their MQTT
  credentials, and the Mosquitto password and ACL files;
* ``publish_config``: the retained ``vigil/<id>/config`` message.

Running it with Mosquitto (Mosquitto 2.0 or later: the ``$7$`` password hashes, shared
subscriptions and MQTT 5; 2.0.13 or later recommended, since 2.0.11 loses its in-flight
limit after the first acks, so the bridge does not rely on it for backpressure)::

    listener 1883 127.0.0.1
    allow_anonymous false
    password_file /var/lib/vigil/mosquitto/passwd   # vigil devices --mosquitto-passwd
    acl_file /var/lib/vigil/mosquitto/acl           # vigil devices --mosquitto-acl
    pid_file /run/mosquitto/mosquitto.pid           # vigil devices --mosquitto-pid-file
    persistence true
    max_queued_messages 100000                      # the bridge's queue during a log outage

    vigil devices bridge-user vigil-bridge --password-out /etc/vigil/bridge.password
    vigil gateway bridge --mqtt 127.0.0.1:1883 --bootstrap 127.0.0.1:9092 \\
        --username vigil-bridge --password-file /etc/vigil/bridge.password --client-id bridge-1
"""

from __future__ import annotations

from gateway.bridge import Bridge, BridgeConfig, BridgeFailed
from gateway.registry import Device, MosquittoFiles, Registry, RegistryError
from gateway.remote_config import publish_config

__all__ = [
    "Bridge",
    "BridgeConfig",
    "BridgeFailed",
    "Device",
    "MosquittoFiles",
    "Registry",
    "RegistryError",
    "publish_config",
]
