"""``vigil gateway bridge``, ``vigil gateway mqtt`` (the embedded broker) and ``vigil devices add|list|show|revoke|config|bridge-user``:
thin argparse layers over ``gateway.bridge.Bridge`` and ``gateway.registry.Registry``.

Settings come from options, with environment variables as defaults:
VIGIL_BOOTSTRAP, VIGIL_MQTT (host:port), VIGIL_MQTT_USER, VIGIL_MQTT_PASSWORD_FILE,
VIGIL_REGISTRY (the SQLite file), VIGIL_MOSQUITTO_PASSWD, VIGIL_MOSQUITTO_ACL,
VIGIL_MOSQUITTO_PID_FILE, VIGIL_MOSQUITTO_RELOAD.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _read_secret(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


def register(sub: Any) -> None:
    g = sub.add_parser("gateway", help="the MQTT -> log bridge")
    gsub = g.add_subparsers(dest="gateway_command", metavar="COMMAND")
    b = gsub.add_parser("bridge", help="bridge vigil/+/events from MQTT into the log")
    b.add_argument("--mqtt", type=_host_port, default=_host_port(_env("VIGIL_MQTT", "127.0.0.1:1883") or ""),
                   metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    b.add_argument("--bootstrap", default=_env("VIGIL_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    b.add_argument("--kafka-config", metavar="FILE", default=_env("VIGIL_KAFKA_CONFIG"),
                   help="librdkafka settings, key=value lines as kcat -F reads (TLS, SASL: "
                        "see gateway/kafka_config.py)")
    b.add_argument("--status-topic", default="device-status",
                   help="compacted topic of the agents' status (default device-status)")
    b.add_argument("--username", default=_env("VIGIL_MQTT_USER"), help="the bridge's MQTT user")
    b.add_argument("--password-file", default=_env("VIGIL_MQTT_PASSWORD_FILE"),
                   help="file holding the bridge's MQTT password")
    b.add_argument("--client-id", default=None, help="MQTT client id: keep it stable (persistent session)")
    b.add_argument("--group", default="vigil-bridge", help="shared subscription group")
    b.add_argument("--no-shared", action="store_true", help="plain subscription, even if $share works")
    b.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5",
                   help="5 (default; Mosquitto) or 3.1.1 (the embedded broker)")
    b.add_argument("--telemetry-topic", default="telemetry")
    b.add_argument("--rejected-topic", default="telemetry.rejected")
    b.add_argument("--max-payload", type=int, default=None, help="bytes (default: the wire limit)")
    b.add_argument("--skew-future-s", type=float, default=300, help="flag events this far ahead (s)")
    b.add_argument("--skew-past-s", type=float, default=7 * 86400, help="flag events this old (s)")
    b.add_argument("--linger-ms", type=int, default=5)
    b.add_argument("--compression", default="lz4", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    b.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    b.set_defaults(func=_bridge)

    m = gsub.add_parser("mqtt", help="the embedded MQTT broker (amqtt), checking the device registry")
    m.add_argument("--listen", type=_host_port, default=_host_port(_env("VIGIL_MQTT", "127.0.0.1:1883") or ""),
                   metavar="HOST:PORT")
    m.add_argument("--registry", default=_env("VIGIL_REGISTRY", "var/gateway/devices.db"))
    m.set_defaults(func=_mqtt)

    from gateway.api_cli import register_api

    register_api(gsub)

    d = sub.add_parser("devices", help="the device registry and MQTT credentials")
    d.add_argument("--registry", default=_env("VIGIL_REGISTRY", "var/gateway/devices.db"))
    d.add_argument("--mosquitto-passwd", default=_env("VIGIL_MOSQUITTO_PASSWD", "var/mosquitto/passwd"))
    d.add_argument("--mosquitto-acl", default=_env("VIGIL_MOSQUITTO_ACL", "var/mosquitto/acl"))
    d.add_argument("--mosquitto-pid-file", default=_env("VIGIL_MOSQUITTO_PID_FILE"))
    d.add_argument("--mosquitto-reload", default=_env("VIGIL_MOSQUITTO_RELOAD"),
                   help="command that makes mosquitto reload (instead of SIGHUP to the pid file)")
    dsub = d.add_subparsers(dest="devices_command", metavar="COMMAND")

    p = dsub.add_parser("add", help="register a device and print its MQTT password (once)")
    p.add_argument("device")
    p.add_argument("--kind", required=True, choices=["vehicle", "patient"])
    p.add_argument("--name", default="")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_devices_add)

    p = dsub.add_parser("list", help="registered devices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_devices_list)

    p = dsub.add_parser("show", help="one device")
    p.add_argument("device")
    p.set_defaults(func=_devices_show)

    p = dsub.add_parser("revoke", help="remove a device's credentials; its traffic stops")
    p.add_argument("device")
    p.set_defaults(func=_devices_revoke)

    p = dsub.add_parser("config", help="set remote config keys (published retained)")
    p.add_argument("device")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="a JSON value or a string; "
                   "KEY=null removes the key")
    p.add_argument("--mqtt", type=_host_port, default=_host_port(_env("VIGIL_MQTT", "127.0.0.1:1883") or ""))
    p.add_argument("--username", default=_env("VIGIL_MQTT_USER"))
    p.add_argument("--password-file", default=_env("VIGIL_MQTT_PASSWORD_FILE"))
    p.set_defaults(func=_devices_config)

    p = dsub.add_parser("bridge-user", help="create or rotate a bridge MQTT user")
    p.add_argument("name", nargs="?", default="vigil-bridge")
    p.add_argument("--password-out", required=True, help="write the password to this file (mode 0600)")
    p.set_defaults(func=_devices_bridge_user)


def _bridge(args: argparse.Namespace) -> int:
    from gateway.bridge import Bridge, BridgeConfig, BridgeFailed
    from gateway.core import SkewBounds
    from gateway.kafka_config import KafkaConfigError, read_kafka_config
    from gateway.metrics import BridgeMetrics

    extra: dict[str, Any] = {}
    if args.kafka_config:
        try:
            extra["producer_config"] = read_kafka_config(args.kafka_config)
        except KafkaConfigError as exc:
            print(f"vigil gateway bridge: {exc}", file=sys.stderr)
            return 2
    if args.client_id:
        extra["client_id"] = args.client_id
    if args.max_payload:
        extra["max_payload"] = args.max_payload
    config = BridgeConfig(
        bootstrap=args.bootstrap, mqtt_host=args.mqtt[0], mqtt_port=args.mqtt[1],
        username=args.username, password=_read_secret(args.password_file), group=args.group,
        shared=False if args.no_shared else None, telemetry_topic=args.telemetry_topic,
        rejected_topic=args.rejected_topic, status_topic=args.status_topic,
        skew=SkewBounds(int(args.skew_future_s * 1000), int(args.skew_past_s * 1000)),
        linger_ms=args.linger_ms, compression=args.compression, mqtt_version=args.mqtt_version, **extra)
    metrics = BridgeMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    bridge = Bridge(config, metrics)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    try:
        bridge.run()
    except BridgeFailed as exc:
        print(f"vigil gateway bridge: {exc}", file=sys.stderr)
        return 1
    return 0


def _mqtt(args: argparse.Namespace) -> int:
    from gateway.embedded import serve

    serve(args.listen[0], args.listen[1], args.registry)
    return 0


def _registry(args: argparse.Namespace) -> Any:
    from gateway.registry import MosquittoFiles, Registry

    files = MosquittoFiles(Path(args.mosquitto_passwd), Path(args.mosquitto_acl),
                           Path(args.mosquitto_pid_file) if args.mosquitto_pid_file else None,
                           args.mosquitto_reload)
    return Registry(Path(args.registry), files)


def _fail(exc: Exception) -> int:
    print(f"vigil devices: {exc}", file=sys.stderr)
    return 1


def _devices_add(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError, parse_assignments

    try:
        password = _registry(args).add(args.device, args.kind, args.name, parse_assignments(args.meta))
    except RegistryError as exc:
        return _fail(exc)
    print(f"device {args.device} registered; its MQTT user is {args.device} and its password "
          "(shown only now):", file=sys.stderr)
    print(password)
    return 0


def _device_json(d: Any) -> dict[str, Any]:
    return {"id": d.id, "kind": d.kind, "name": d.name, "meta": d.meta, "config": d.config,
            "created_at": d.created_at, "revoked_at": d.revoked_at}


def _devices_list(args: argparse.Namespace) -> int:
    devices = _registry(args).list()
    if args.json:
        print(json.dumps([_device_json(d) for d in devices], indent=2))
        return 0
    print(f"{'ID':24} {'KIND':8} {'STATE':8} NAME")
    for d in devices:
        print(f"{d.id:24} {d.kind:8} {'active' if d.active else 'revoked':8} {d.name}")
    return 0


def _devices_show(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError

    try:
        print(json.dumps(_device_json(_registry(args).get(args.device)), indent=2))
    except RegistryError as exc:
        return _fail(exc)
    return 0


def _devices_revoke(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError

    try:
        d = _registry(args).revoke(args.device)
    except RegistryError as exc:
        return _fail(exc)
    print(f"device {d.id} revoked at {d.revoked_at}", file=sys.stderr)
    return 0


def _devices_config(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError, parse_assignments
    from gateway.remote_config import publish_config

    try:
        config = _registry(args).set_config(args.device, parse_assignments(args.assignments))
    except RegistryError as exc:
        return _fail(exc)
    try:
        publish_config(args.mqtt[0], args.mqtt[1], args.device, config, username=args.username,
                       password=_read_secret(args.password_file))
    except (ConnectionError, TimeoutError, OSError) as exc:
        return _fail(RuntimeError(f"config of {args.device} saved but not published: {exc}"))
    print(json.dumps(config))
    return 0


def _devices_bridge_user(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError

    try:
        password = _registry(args).set_bridge_user(args.name)
    except RegistryError as exc:
        return _fail(exc)
    out = Path(args.password_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    print(f"bridge user {args.name}: password written to {out}", file=sys.stderr)
    return 0
