"""`vigil edge run` and `vigil edge check`: thin layers over ``run_agent`` and ``check_device``."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge import registry
from edge.agent import Agent, build_sensor, build_sensors
from edge.config import Config, ConfigError, load_config
from edge.publisher import probe_connection

__all__ = ["check_device", "load_device_config", "register", "run_agent"]


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the device agent: read sensors, publish to the gateway")
    p.add_argument("--config", required=True, type=Path, help="the device's TOML file")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("check", help="validate a device config, open each sensor, print one reading each")
    p.add_argument("--config", required=True, type=Path, help="the device's TOML file")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each sensor's first reading")
    p.add_argument("--mqtt", action="store_true",
                   help="also log in to the MQTT broker with the device's credentials (as <id>-check)")
    p.set_defaults(func=_cmd_check)


def load_device_config(path: Path) -> Config:
    """Load, import the sensor modules the file names, and validate (sensor types included)."""
    config = load_config(path)  # structure first: sensor_modules must be readable
    registry.load_sensor_modules(config.agent.sensor_modules)
    return load_config(path, sensor_types=registry.SENSOR_TYPES)


def run_agent(config: Config, stop: threading.Event) -> None:
    Agent(config, build_sensors(config)).run(stop)


def _cmd_run(args: Any) -> int:
    try:
        config = load_device_config(args.config)
        sensors = build_sensors(config)
    except (ConfigError, ImportError) as exc:
        print(f"vigil edge run: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Agent(config, sensors).run(stop)
    return 0


def check_device(config: Config, *, timeout: float = 5.0, out: TextIO = sys.stdout,
                 clock: Callable[[], float] = time.monotonic, mqtt: bool = False) -> bool:
    """Open each sensor and print its first reading, or why there is none (and, with
    ``mqtt``, whether the broker accepts the device's login). True if all is well."""
    m = config.mqtt
    endpoint = f"{m.host}:{m.port}"
    print(f"device {config.device.id} ({config.device.kind}); MQTT {endpoint}"
          f"{' TLS' if m.tls else ''}{f' as {m.username}' if m.username else ''}; "
          f"outbox {config.outbox.path}", file=out)
    ok = True
    if mqtt:
        problem = probe_connection(config, timeout=timeout)
        print(f"FAIL mqtt {endpoint}: {problem}" if problem else f"ok   mqtt {endpoint}: login accepted", file=out)
        ok = problem is None
    for sc in config.sensors:
        label = f"{sc.name} ({sc.type})"
        try:
            sensor = build_sensor(sc)
        except ConfigError as exc:
            print(f"FAIL {label}: {'; '.join(exc.errors)}", file=out)
            ok = False
            continue
        try:
            sensor.open()
        except Exception as exc:
            print(f"FAIL {label}: cannot open: {exc}", file=out)
            ok = False
            continue
        try:
            reading = None
            deadline = clock() + timeout
            while reading is None:
                readings = sensor.poll()
                if readings:
                    reading = readings[-1]
                    break
                if clock() >= deadline:
                    break
                time.sleep(0.05)
            if reading is None:
                print(f"FAIL {label}: no reading in {timeout:g} s", file=out)
                ok = False
            else:
                doc = {"kind": reading.kind, "ts": reading.ts, "data": reading.data}
                print(f"ok   {label}: {json.dumps(doc, separators=(',', ':'))}", file=out)
        except Exception as exc:
            print(f"FAIL {label}: read failed: {exc}", file=out)
            ok = False
        finally:
            with contextlib.suppress(Exception):
                sensor.close()
    return ok


def _cmd_check(args: Any) -> int:
    try:
        config = load_device_config(args.config)
    except (ConfigError, ImportError) as exc:
        print(f"vigil edge check: {exc}", file=sys.stderr)
        return 2
    return 0 if check_device(config, timeout=args.timeout, mqtt=args.mqtt) else 1
