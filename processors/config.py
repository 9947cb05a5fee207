"""The processors' configuration: one TOML file, every key optional.

::

    [kafka]
    bootstrap = "127.0.0.1:9092"      # any Kafka-protocol cluster
    group = "vigil-processors"         # processes with the same group split the partitions
    instance_id = "proc-1"             # optional: static membership (a restart under the same
                                       # name keeps its partitions without a rebalance)
    [kafka.client]                     # extra librdkafka settings, e.g. for a secured cluster
    "security.protocol" = "SASL_SSL"

    [topics]
    telemetry = "telemetry"
    alerts = "alerts"
    device_state = "device-state"
    checkpoints = "processors.checkpoints"   # compacted; one partition per input partition
    late = "telemetry.late"                  # the side output of events too late for a window

    [windows]
    state_window_s = 5        # device-state snapshots and per-window aggregates
    max_out_of_order_s = 2    # the watermark trails the newest event time by this much
    grace_s = 0               # a window closes this long after the watermark passed its end
    idle_timeout_s = 5        # a caught-up partition's clock follows the wall clock after this
    tick_s = 1                # the rules' clock (offline, no data) advances in these steps

    [checkpoint]
    interval_s = 5            # state and input offsets are saved together this often

    [vehicles]                # processors.rules.VehicleRules: every field, and zones
    default_speed_limit = 33.3
    [[vehicles.zones]]
    name = "depot"
    lat = 52.30
    lon = 13.60
    radius_m = 300
    [vehicles.devices."truck-7"]   # one vehicle's own settings on top of the table above
    speed_limit = 25

    [patients]                # processors.rules.PatientRules
    no_data_s = 60
    [[patients.thresholds]]
    name = "spo2_low"
    parameter = "spo2"
    direction = "below"
    fire = 90
    clear = 92
    [patients.devices."bed-3"]
    spo2_scale = 2

A mistake (an unknown key, a wrong type, a bad value) is a `ConfigError` naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from processors.rules import PatientRules, VehicleRules

_R = TypeVar("_R")

__all__ = ["ConfigError", "ProcessorsConfig", "RuleBook", "Topics", "WindowSettings"]


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class Topics:
    telemetry: str = "telemetry"
    alerts: str = "alerts"
    device_state: str = "device-state"
    checkpoints: str = "processors.checkpoints"
    late: str = "telemetry.late"


@dataclass(frozen=True, slots=True)
class WindowSettings:
    state_window_s: float = 5.0
    max_out_of_order_s: float = 2.0
    grace_s: float = 0.0
    idle_timeout_s: float = 5.0
    tick_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("state_window_s", "idle_timeout_s", "tick_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"windows.{name} must be positive")
        for name in ("max_out_of_order_s", "grace_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"windows.{name} must not be negative")


class RuleBook:
    """The rules of each device: the kind's table with the device's own overrides."""

    def __init__(self, vehicles: Mapping[str, Any] | None = None,
                 patients: Mapping[str, Any] | None = None) -> None:
        vehicles, patients = dict(vehicles or {}), dict(patients or {})
        self._vehicle_devices: dict[str, Any] = _table(vehicles.pop("devices", {}), "vehicles.devices")
        self._patient_devices: dict[str, Any] = _table(patients.pop("devices", {}), "patients.devices")
        self._vehicle_base, self._patient_base = vehicles, patients
        self.vehicle_default: VehicleRules = _build(VehicleRules.from_config, vehicles, "vehicles")
        self.patient_default: PatientRules = _build(PatientRules.from_config, patients, "patients")
        # Each device's own rules, built once now so that a mistake shows at start.
        self._vehicles: dict[str, VehicleRules] = {d: _build(VehicleRules.from_config, {**vehicles, **_table(o, f"vehicles.devices.{d}")},
                                    f"vehicles.devices.{d}")
                          for d, o in self._vehicle_devices.items()}
        self._patients: dict[str, PatientRules] = {d: _build(PatientRules.from_config, {**patients, **_table(o, f"patients.devices.{d}")},
                                    f"patients.devices.{d}")
                          for d, o in self._patient_devices.items()}

    def vehicle(self, device: str) -> VehicleRules:
        return self._vehicles.get(device, self.vehicle_default)

    def patient(self, device: str) -> PatientRules:
        return self._patients.get(device, self.patient_default)


@dataclass(frozen=True, slots=True)
class ProcessorsConfig:
    bootstrap: str = "127.0.0.1:9092"
    group: str = "vigil-processors"
    instance_id: str | None = None
    client: Mapping[str, Any] = field(default_factory=dict)
    topics: Topics = field(default_factory=Topics)
    windows: WindowSettings = field(default_factory=WindowSettings)
    checkpoint_interval_s: float = 5.0
    rules: RuleBook = field(default_factory=RuleBook)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ProcessorsConfig:
        doc = dict(doc)
        _only(doc, {"kafka", "topics", "windows", "checkpoint", "vehicles", "patients"}, "")
        kafka = _table(doc.get("kafka", {}), "kafka")
        _only(kafka, {"bootstrap", "group", "instance_id", "client"}, "kafka")
        topics = _table(doc.get("topics", {}), "topics")
        _only(topics, set(Topics.__dataclass_fields__), "topics")
        windows = _table(doc.get("windows", {}), "windows")
        _only(windows, set(WindowSettings.__dataclass_fields__), "windows")
        checkpoint = _table(doc.get("checkpoint", {}), "checkpoint")
        _only(checkpoint, {"interval_s"}, "checkpoint")
        for key, value in topics.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(f"topics.{key} must be a topic name")
        for key, value in windows.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"windows.{key} must be a number of seconds")
        interval = checkpoint.get("interval_s", 5.0)
        if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
            raise ConfigError("checkpoint.interval_s must be a positive number of seconds")
        for key in ("bootstrap", "group", "instance_id"):
            if key in kafka and (not isinstance(kafka[key], str) or not kafka[key]):
                raise ConfigError(f"kafka.{key} must be a non-empty string")
        return cls(
            bootstrap=kafka.get("bootstrap", "127.0.0.1:9092"),
            group=kafka.get("group", "vigil-processors"),
            instance_id=kafka.get("instance_id"),
            client=_table(kafka.get("client", {}), "kafka.client"),
            topics=Topics(**topics),
            windows=WindowSettings(**{k: float(v) for k, v in windows.items()}),
            checkpoint_interval_s=float(interval),
            rules=RuleBook(_table(doc.get("vehicles", {}), "vehicles"),
                           _table(doc.get("patients", {}), "patients")),
        )

    @classmethod
    def load(cls, path: str | Path) -> ProcessorsConfig:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            return cls.from_mapping(doc)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where or 'the file'} must be a table")
    return dict(value)


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown setting(s): {', '.join(prefix + k for k in unknown)} "
                          f"(known: {', '.join(sorted(allowed))})")


def _build(factory: Callable[[Mapping[str, Any]], _R], table: Mapping[str, Any], where: str) -> _R:
    try:
        return factory(table)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
