"""A device's configuration: one TOML file per device, validated into frozen dataclasses.

::

    [device]
    id = "truck-7"              # the MQTT client id and the key of every event
    kind = "vehicle"            # vehicle | patient

    [mqtt]
    host = "gateway.example"    # default 127.0.0.1
    port = 8883                 # default 1883 (8883 when [mqtt.tls] is given)
    username = "truck-7"        # optional
    password_file = "secret"    # or password = "..."; a file keeps it out of the config
    keepalive = 30              # seconds
    reconnect_min_s = 1         # exponential reconnect backoff with full jitter,
    reconnect_max_s = 60        #   between these bounds
    inflight_batches = 4        # batches published and not yet acked by the gateway
    ack_timeout_s = 30          # resend the window when the gateway says nothing this long
    status_interval_s = 60      # retained online status, also sent on every connect
    connect_timeout_s = 10
    [mqtt.tls]                  # optional; all paths relative to this file
    ca = "ca.pem"
    cert = "truck-7.pem"        # client certificate (per device), with key
    key = "truck-7.key"

    [outbox]
    path = "/var/lib/vigil/outbox.sqlite"   # default var/edge/<id>.outbox.sqlite (cwd)
    max_bytes = 67108864        # when full: drop oldest, counted (see edge.outbox)
    max_age_s = 604800          # older events are dropped, counted
    batch_max_events = 500      # events per MQTT message (also capped by payload size)

    [agent]
    poll_interval_s = 0.05      # how often sensors are polled
    sensor_modules = []         # extra modules that register sensor types

    [[sensors]]
    name = "gps"                # unique per device
    type = "gps"                # a registered sensor type (see edge.registry)
    period_s = 1                # report at most this often (0: every reading)
    deadband = { lat = 0.0001, lon = 0.0001, speed = 0.5 }   # or one number for all fields
    heartbeat_s = 60            # report at least this often while readings come
    port = "/dev/ttyAMA0"       # anything else: driver options, in SensorConfig.options
    baud = 9600

Unknown keys are errors (a typo must not silently fall back to a default), except in
``[[sensors]]``, where keys other than name/type/period_s/deadband/heartbeat_s are the
driver's options and the driver's factory checks them. Every error names the key:
``sensors[2].period_s: must be a non-negative number, got -1``. All errors of a file are
reported at once.

Relative paths written in the file are relative to the file's directory.

Environment variables override the file, one per scalar key:
``VIGIL_<SECTION>_<KEY>`` for the ``device``, ``mqtt``, ``outbox`` and ``agent`` tables
(``VIGIL_DEVICE_ID``, ``VIGIL_MQTT_HOST``, ``VIGIL_MQTT_PORT``, ``VIGIL_MQTT_USERNAME``,
``VIGIL_MQTT_PASSWORD``, ``VIGIL_MQTT_PASSWORD_FILE``, ``VIGIL_OUTBOX_PATH``,
``VIGIL_OUTBOX_MAX_BYTES``, ...) and ``VIGIL_MQTT_TLS_CA`` / ``_CERT`` / ``_KEY``. Values
are parsed as the key's type; relative paths from the environment are relative to the
working directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import wire

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "Deadband",
    "DeviceConfig",
    "MqttConfig",
    "OutboxConfig",
    "RemoteConfig",
    "SensorConfig",
    "SensorOverride",
    "TlsConfig",
    "load_config",
    "parse_config",
    "parse_remote_config",
]

DEVICE_KINDS = ("vehicle", "patient")
SENSOR_COMMON_KEYS = ("name", "type", "period_s", "deadband", "heartbeat_s")
ENV_PREFIX = "VIGIL_"

# A deadband: one number for every numeric field, or a number per field ("*": the rest).
Deadband = float | Mapping[str, float]


class ConfigError(ValueError):
    """A configuration that cannot be used; ``errors`` lists every problem, each naming its key."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + ("; ".join(errors) if len(errors) == 1 else
                                 f"{len(errors)} errors:\n  " + "\n  ".join(errors)))


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str
    kind: str


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    keepalive: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    inflight_batches: int = 4
    ack_timeout_s: float = 30.0
    status_interval_s: float = 60.0
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    path: Path
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0
    batch_max_events: int = 500


@dataclass(frozen=True, slots=True)
class AgentConfig:
    poll_interval_s: float = 0.05
    sensor_modules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SensorConfig:
    name: str
    type: str
    period_s: float | None = None  # None: the type's default (edge.sampling)
    deadband: Deadband | None = None
    heartbeat_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # driver-specific keys
    index: int = 0  # position in [[sensors]], for error messages

    def option(self, key: str, default: Any = ...) -> Any:
        """A driver option; without a default, a missing one raises ValueError naming it."""
        if key in self.options:
            return self.options[key]
        if default is ...:
            raise ValueError(f"sensors[{self.index}].{key}: required by sensor type {self.type!r}")
        return default


@dataclass(frozen=True, slots=True)
class Config:
    device: DeviceConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    agent: AgentConfig
    sensors: tuple[SensorConfig, ...]
    source: Path | None = None

    def sensor(self, name: str) -> SensorConfig:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class SensorOverride:
    period_s: float | None = None
    deadband: Deadband | None = None
    heartbeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """What the gateway may change through the retained ``vigil/<device>/config``::

        {"sensors": {"gps": {"period_s": 5, "deadband": {"lat": 0.001}, "heartbeat_s": 120}},
         "status_interval_s": 30}
    """

    sensors: Mapping[str, SensorOverride] = field(default_factory=dict)
    status_interval_s: float | None = None


# --- validation ---------------------------------------------------------------------------

_MISSING: Any = object()


class _Table:
    """Reads one TOML table, recording an error per bad key; ``finish`` flags unknown keys."""

    def __init__(self, raw: Any, where: str, errors: list[str], env: Mapping[str, str]) -> None:
        self.where = where
        self.errors = errors
        self.env = env  # path -> env var name, for keys whose value came from the environment
        self.used: set[str] = set()
        if raw is _MISSING or raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"{where}: must be a table, got {_show(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _err(self, key: str, msg: str) -> None:
        p = self.path(key)
        origin = f" (from {self.env[p]})" if p in self.env else ""
        self.errors.append(f"{p}{origin}: {msg}")

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key, _MISSING)

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> Any:
        v = self.get(key)
        if v is _MISSING:
            if default is _MISSING:
                self._err(key, "is required")
                return None
            return default
        if not isinstance(v, str) or not v:
            self._err(key, f"must be a non-empty string, got {_show(v)}")
            return default if default is not _MISSING else None
        if choices and v not in choices:
            self._err(key, f"must be one of {', '.join(choices)}, got {v!r}")
            return default if default is not _MISSING else None
        return v

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        v = self.get(key)
        if v is _MISSING:
            return default
        if isinstance(v, str) and self.path(key) in self.env:
            with contextlib.suppress(ValueError):
                v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum or (maximum is not None and v > maximum):
            bound = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            self._err(key, f"must be {bound}, got {_show(v)}")
            return default
        return v

    def number(self, key: str, default: Any, *, positive: bool = False) -> Any:
        v = self.get(key)
        if v is _MISSING:
            return default
        if isinstance(v, str) and self.path(key) in self.env:
            with contextlib.suppress(ValueError):
                v = float(v)
        if not _is_number(v) or v < 0 or (positive and v == 0):
            self._err(key, f"must be a {'positive' if positive else 'non-negative'} number, got {_show(v)}")
            return default
        return float(v)

    def path_value(self, key: str, base: Path, default: Any = None) -> Any:
        v = self.string(key, default)
        if v is None or v is default:
            return v
        p = Path(v).expanduser()
        if not p.is_absolute():
            p = (Path.cwd() if self.path(key) in self.env else base) / p
        return p

    def finish(self, *, allow_extra: bool = False) -> dict[str, Any]:
        extra = {k: v for k, v in self.raw.items() if k not in self.used}
        if not allow_extra:
            for k in sorted(extra):
                self._err(k, "unknown key")
        return extra


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _show(v: Any) -> str:
    if v is _MISSING:
        return "nothing"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "a list"
    return repr(v)


def _deadband(t: _Table, key: str) -> Deadband | None:
    v = t.get(key)
    if v is _MISSING:
        return None
    if isinstance(v, dict):
        out: dict[str, float] = {}
        for field_name, width in v.items():
            if not _is_number(width) or width < 0:
                t._err(f"{key}.{field_name}", f"must be a non-negative number, got {_show(width)}")
                continue
            out[str(field_name)] = float(width)
        return out
    if not _is_number(v) or v < 0:
        t._err(key, f"must be a non-negative number or a table of field = number, got {_show(v)}")
        return None
    return float(v)


def _env_overrides(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply VIGIL_<SECTION>_<KEY> variables to ``doc`` in place; returns path -> variable."""
    applied: dict[str, str] = {}
    tables = {"DEVICE": ("device",), "MQTT_TLS": ("mqtt", "tls"), "MQTT": ("mqtt",),
              "OUTBOX": ("outbox",), "AGENT": ("agent",)}
    for var, value in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX):]
        for prefix, path in tables.items():  # MQTT_TLS before MQTT: longest first
            if rest.startswith(prefix + "_"):
                key = rest[len(prefix) + 1:].lower()
                if not key:
                    break
                target = doc
                for part in path:
                    nxt = target.setdefault(part, {})
                    if not isinstance(nxt, dict):
                        break
                    target = nxt
                else:
                    if key == "password" and "password_file" in target:
                        del target["password_file"]  # the environment wins over the file
                    if key == "password_file" and "password" in target:
                        del target["password"]
                    target[key] = value
                    applied[".".join((*path, key))] = var
                break
    return applied


def parse_config(doc: Mapping[str, Any], *, base_dir: Path | None = None,
                 environ: Mapping[str, str] | None = None, source: str = "",
                 sensor_types: Collection[str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a ``Config``.

    ``sensor_types``: the registered types, to refuse unknown ones; None skips that check.
    Raises ConfigError listing every problem."""
    base = base_dir or Path.cwd()
    raw = _deep_copy(dict(doc))
    env = _env_overrides(raw, os.environ if environ is None else environ)
    errors: list[str] = []
    top = _Table(raw, "", errors, env)

    d = _Table(top.get("device"), "device", errors, env)
    device_id = d.string("id")
    if device_id is not None:
        try:
            wire.check_device_id(device_id)
        except wire.WireError as exc:
            d._err("id", str(exc))
    device = DeviceConfig(device_id or "", d.string("kind", choices=DEVICE_KINDS) or "")
    d.finish()

    m = _Table(top.get("mqtt"), "mqtt", errors, env)
    tls: TlsConfig | None = None
    raw_tls = m.get("tls")
    if raw_tls is not _MISSING:
        t = _Table(raw_tls, "mqtt.tls", errors, env)
        tls = TlsConfig(t.path_value("ca", base), t.path_value("cert", base), t.path_value("key", base))
        if (tls.cert is None) != (tls.key is None):
            errors.append("mqtt.tls: cert and key go together (a client certificate needs its key)")
        t.finish()
    password = m.string("password", None)
    password_file = m.path_value("password_file", base)
    if password is not None and password_file is not None:
        errors.append("mqtt: give password or password_file, not both")
    elif password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            m._err("password_file", f"cannot read {password_file}: {exc.strerror or exc}")
    reconnect_min = m.number("reconnect_min_s", 1.0, positive=True)
    reconnect_max = m.number("reconnect_max_s", 60.0, positive=True)
    if reconnect_max < reconnect_min:
        m._err("reconnect_max_s", f"must be >= reconnect_min_s ({reconnect_min}), got {reconnect_max}")
    mqtt = MqttConfig(
        host=m.string("host", "127.0.0.1"),
        port=m.integer("port", 8883 if tls else 1883, minimum=1, maximum=65535),
        username=m.string("username", None),
        password=password,
        tls=tls,
        keepalive=m.integer("keepalive", 30, minimum=5, maximum=65535),
        reconnect_min_s=reconnect_min,
        reconnect_max_s=reconnect_max,
        inflight_batches=m.integer("inflight_batches", 4, minimum=1, maximum=1000),
        ack_timeout_s=m.number("ack_timeout_s", 30.0, positive=True),
        status_interval_s=m.number("status_interval_s", 60.0, positive=True),
        connect_timeout_s=m.number("connect_timeout_s", 10.0, positive=True),
    )
    m.finish()

    o = _Table(top.get("outbox"), "outbox", errors, env)
    default_path = Path("var") / "edge" / f"{device.id or 'device'}.outbox.sqlite"
    outbox = OutboxConfig(
        path=o.path_value("path", base, None) or default_path.absolute(),
        max_bytes=o.integer("max_bytes", 64 * 1024 * 1024, minimum=1024),
        max_age_s=o.number("max_age_s", 7 * 24 * 3600.0, positive=True),
        batch_max_events=o.integer("batch_max_events", 500, minimum=1, maximum=100_000),
    )
    o.finish()

    a = _Table(top.get("agent"), "agent", errors, env)
    modules = a.get("sensor_modules")
    if modules is _MISSING:
        modules = []
    elif isinstance(modules, str) and "agent.sensor_modules" in env:
        modules = [s.strip() for s in modules.split(",") if s.strip()]
    if not isinstance(modules, list) or not all(isinstance(x, str) and x for x in modules):
        a._err("sensor_modules", f"must be a list of module names, got {_show(modules)}")
        modules = []
    agent = AgentConfig(poll_interval_s=a.number("poll_interval_s", 0.05, positive=True),
                        sensor_modules=tuple(modules))
    a.finish()

    raw_sensors = top.get("sensors")
    sensors: list[SensorConfig] = []
    if raw_sensors is _MISSING:
        raw_sensors = []
    if not isinstance(raw_sensors, list):
        errors.append(f"sensors: must be an array of tables ([[sensors]]), got {_show(raw_sensors)}")
        raw_sensors = []
    seen: dict[str, int] = {}
    for i, raw_sensor in enumerate(raw_sensors):
        s = _Table(raw_sensor, f"sensors[{i}]", errors, env)
        name = s.string("name")
        stype = s.string("type")
        if name is not None:
            if name in seen:
                s._err("name", f"{name!r} is already the name of sensors[{seen[name]}]")
            seen[name] = i
        if stype is not None and sensor_types is not None and stype not in sensor_types:
            known = ", ".join(sorted(sensor_types)) or "none registered"
            s._err("type", f"unknown sensor type {stype!r} (known: {known})")
        period = s.number("period_s", None)
        heartbeat = s.number("heartbeat_s", None, positive=True)
        if period is not None and heartbeat is not None and heartbeat < period:
            s._err("heartbeat_s", f"must be >= period_s ({period}), got {heartbeat}")
        deadband = _deadband(s, "deadband")
        options = s.finish(allow_extra=True)
        sensors.append(SensorConfig(name or "", stype or "", period, deadband, heartbeat, options, i))
    top.finish()
    if errors:
        raise ConfigError(errors, source)
    return Config(device, mqtt, outbox, agent, tuple(sensors),
                  Path(source) if source else None)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None,
                sensor_types: Collection[str] | None = None) -> Config:
    """Read and validate a device's TOML file. Raises ConfigError (also for unreadable files)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(p)) from None
    return parse_config(doc, base_dir=p.resolve().parent, environ=environ, source=str(p),
                        sensor_types=sensor_types)


def parse_remote_config(doc: Mapping[str, Any], sensor_names: Collection[str]) -> RemoteConfig:
    """Validate a remote config (``wire.decode_config``'s result). Raises ConfigError; the
    agent then logs it and keeps what it runs with."""
    errors: list[str] = []
    top = _Table(dict(doc), "", errors, {})
    raw_sensors = top.get("sensors")
    overrides: dict[str, SensorOverride] = {}
    if raw_sensors is not _MISSING:
        if not isinstance(raw_sensors, dict):
            errors.append(f"sensors: must be an object of sensor name -> settings, got {_show(raw_sensors)}")
        else:
            for name, raw in raw_sensors.items():
                s = _Table(raw, f"sensors.{name}", errors, {})
                if name not in sensor_names:
                    errors.append(f"sensors.{name}: this device has no such sensor")
                period = s.number("period_s", None)
                heartbeat = s.number("heartbeat_s", None, positive=True)
                overrides[name] = SensorOverride(period, _deadband(s, "deadband"), heartbeat)
                s.finish()
    status_interval = top.number("status_interval_s", None, positive=True)
    top.finish()
    if errors:
        raise ConfigError(errors, "remote config")
    return RemoteConfig(overrides, status_interval)


def _deep_copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_copy(x) for x in v]
    return v

