"""The agent: sensors → sampling → outbox → publisher, until told to stop.

One thread polls every sensor each ``poll_interval_s``, passes readings through each
sensor's sampler, and stores what is to be reported in the outbox, all readings of a tick
in one transaction. The publisher's own thread sends the outbox (see edge.publisher). A
sensor that fails to open or to read is closed, logged and retried with backoff; it never
stops the others. Each event's data carries the name of its sensor (``"sensor"``), unless
the driver already put one there, so two inputs of the same kind stay apart downstream.
"""

from __future__ import annotations

import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from edge import registry
from edge.config import Config, ConfigError, RemoteConfig, SensorConfig, parse_remote_config
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.sampling import Sampler, policy_for
from edge.sensors.base import Reading, Sensor

__all__ = ["Agent", "agent_version", "build_sensor", "build_sensors"]

log = logging.getLogger("vigil.edge")

_OPTION_MESSAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*: ")
EXPIRE_EVERY_S = 10.0
SENSOR_RETRY_MIN_S = 1.0
SENSOR_RETRY_MAX_S = 60.0


def agent_version() -> str:
    try:
        return metadata.version("vigil")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_sensor(sc: SensorConfig) -> Sensor:
    """The driver for one [[sensors]] entry (types must be registered). Raises ConfigError
    naming the entry when the type is unknown or its factory refuses the options."""
    factory = registry.SENSOR_TYPES.get(sc.type)
    if factory is None:
        known = ", ".join(sorted(registry.SENSOR_TYPES)) or "none registered"
        raise ConfigError([f"sensors[{sc.index}].type: unknown sensor type {sc.type!r} (known: {known})"])
    try:
        return factory(sc)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        if not msg.startswith("sensors["):
            # drivers say "baudrate: expected an integer"; name the entry as the config does
            key = _OPTION_MESSAGE.match(msg)
            msg = f"sensors[{sc.index}].{msg}" if key else f"sensors[{sc.index}] ({sc.name}): {msg}"
        raise ConfigError([msg]) from None


def build_sensors(config: Config) -> list[Sensor]:
    registry.load_sensor_modules(config.agent.sensor_modules)
    errors: list[str] = []
    out: list[Sensor] = []
    for sc in config.sensors:
        try:
            out.append(build_sensor(sc))
        except ConfigError as exc:
            errors += exc.errors
    if errors:
        raise ConfigError(errors, str(config.source or ""))
    return out


@dataclass(slots=True)
class _Slot:
    """A sensor as the agent runs it."""

    config: SensorConfig
    sensor: Sensor
    sampler: Sampler
    is_open: bool = False
    failures: int = 0
    retry_at: float = 0.0
    readings: int = 0
    reported: int = 0
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Agent:
    def __init__(self, config: Config, sensors: Sequence[Sensor] | None = None, *,
                 outbox: Outbox | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        built = list(sensors) if sensors is not None else build_sensors(config)
        self._slots = [_Slot(sc, s, Sampler(policy_for(sc))) for sc, s in zip(config.sensors, built, strict=True)]
        self.outbox = outbox or Outbox(config.outbox.path, config.device.id, max_bytes=config.outbox.max_bytes,
                                       max_age_s=config.outbox.max_age_s)
        self._remote: queue.Queue[dict[str, Any]] = queue.Queue()
        self.remote_config_state: dict[str, Any] = {"state": "none"}
        self.publisher = Publisher(config, self.outbox, version=agent_version(),
                                   status_extra=self._status_extra, on_remote_config=self._remote.put,
                                   clock=clock)
        self.stopped = threading.Event()
        self.store_errors = 0  # ticks whose readings could not be stored (and were lost)

    # -- running ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; then close sensors, send the offline status, close the outbox."""
        interval = self.config.agent.poll_interval_s
        self.publisher.start()
        next_expire = 0.0
        try:
            while not stop.is_set():
                started = self._clock()
                try:
                    self.tick(started)
                    if started >= next_expire:
                        next_expire = started + EXPIRE_EVERY_S
                        self.outbox.expire()
                except sqlite3.Error as exc:  # e.g. a full disk: keep running, it may pass
                    self.store_errors += 1
                    (log.error if self.store_errors <= 3 or self.store_errors % 100 == 0 else log.debug)(
                        "%s: cannot store readings in the outbox (%d times): %s",
                        self.config.device.id, self.store_errors, exc)
                stop.wait(max(0.0, interval - (self._clock() - started)))
        finally:
            for slot in self._slots:
                self._close(slot)
            self.publisher.stop()
            self.outbox.close()
            self.stopped.set()
            log.info("%s: agent stopped", self.config.device.id)

    def tick(self, now: float) -> int:
        """One pass: poll every sensor, sample, store. Returns the number of events stored."""
        self._apply_remote_configs()
        reports: list[Reading] = []
        for slot in self._slots:
            if not slot.is_open and not self._open(slot, now):
                continue
            try:
                readings = slot.sensor.poll()
            except Exception as exc:
                self._failed(slot, now, f"read failed: {exc}")
                continue
            slot.readings += len(readings)
            out: list[Reading] = []
            for r in readings:
                out += slot.sampler.offer(r, now)
            out += slot.sampler.flush(now)
            slot.reported += len(out)
            name = slot.config.name
            reports += [r if "sensor" in r.data else Reading(r.kind, {"sensor": name, **r.data}, r.ts) for r in out]
        if reports:
            self.outbox.append(reports)
        return len(reports)

    def _open(self, slot: _Slot, now: float) -> bool:
        if now < slot.retry_at:
            return False
        try:
            slot.sensor.open()
        except Exception as exc:
            self._failed(slot, now, f"cannot open: {exc}")
            return False
        slot.is_open = True
        if slot.failures:
            log.info("%s: sensor %s is back", self.config.device.id, slot.config.name)
        slot.failures = 0
        slot.last_error = ""
        return True

    def _failed(self, slot: _Slot, now: float, why: str) -> None:
        self._close(slot)
        delay = min(SENSOR_RETRY_MAX_S, SENSOR_RETRY_MIN_S * 2 ** min(slot.failures, 16))
        slot.failures += 1
        slot.retry_at = now + delay
        slot.last_error = why
        (log.warning if slot.failures <= 3 or slot.failures % 20 == 0 else log.debug)(
            "%s: sensor %s: %s (retrying in %.0f s)", self.config.device.id, slot.config.name, why, delay)

    def _close(self, slot: _Slot) -> None:
        if slot.is_open:
            slot.is_open = False
            try:
                slot.sensor.close()
            except Exception as exc:
                log.debug("closing sensor %s: %s", slot.config.name, exc)

    # -- remote configuration --------------------------------------------------------------

    def _apply_remote_configs(self) -> None:
        while True:
            try:
                doc = self._remote.get_nowait()
            except queue.Empty:
                return
            self.apply_remote_config(doc)

    def apply_remote_config(self, doc: dict[str, Any]) -> bool:
        """Validate and apply a remote config (an empty one restores the file's settings).
        A bad one is logged, reported in the status and ignored as a whole."""
        try:
            remote = parse_remote_config(doc, [s.config.name for s in self._slots])
        except ConfigError as exc:
            log.error("%s: ignoring the remote config: %s", self.config.device.id, exc)
            self.remote_config_state = {"state": "rejected", "error": "; ".join(exc.errors)}
            self.publisher.request_status()
            return False
        self._apply(remote)
        self.remote_config_state = {"state": "applied" if doc else "none"}
        self.publisher.request_status()
        log.info("%s: remote config applied: %s", self.config.device.id, doc)
        return True

    def _apply(self, remote: RemoteConfig) -> None:
        for slot in self._slots:
            slot.sampler.set_policy(policy_for(slot.config, remote.sensors.get(slot.config.name)))
        self.publisher.status_interval_s = remote.status_interval_s or self.config.mqtt.status_interval_s

    # -- status ----------------------------------------------------------------------------

    def _status_extra(self) -> dict[str, Any]:
        sensors: dict[str, Any] = {}
        for slot in self._slots:
            entry: dict[str, Any] = {"open": slot.is_open, "readings": slot.readings, "reported": slot.reported}
            if slot.last_error:
                entry["error"] = slot.last_error
            try:
                entry.update(slot.sensor.stats())
            except Exception as exc:
                entry["stats_error"] = str(exc)
            sensors[slot.config.name] = entry
        return {"sensors": sensors, "remote_config": dict(self.remote_config_state),
                "store_errors": self.store_errors}
