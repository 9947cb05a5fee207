"""The device registry: who may talk to the gateway, and what the MQTT broker is told.

A SQLite database (through sqlite-utils) holds each device (id, kind, display name,
metadata, remote config, its password hash, when it was revoked) and the bridge's own
MQTT users. Every change rewrites Mosquitto's password and ACL files from the database
(atomically: write a temporary file, then rename) and asks Mosquitto to reload them
(SIGHUP to the PID in its pid file, or a configured command), so no restart is needed.
On reload Mosquitto re-checks connected clients: a revoked device is disconnected and can
no longer connect or publish.

Passwords are shown once, when created; only their PBKDF2 hashes are stored.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from edge import wire
from gateway import credentials

__all__ = ["KINDS", "Device", "MosquittoFiles", "Registry", "RegistryError", "parse_assignments"]

log = logging.getLogger("vigil.gateway")

KINDS = ("vehicle", "patient")


class RegistryError(ValueError):
    """A request the registry refuses; the message says why."""


@dataclass(frozen=True)
class Device:
    id: str
    kind: str
    name: str
    meta: dict[str, Any]
    config: dict[str, Any]
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class MosquittoFiles:
    """Where Mosquitto reads its password and ACL files, and how to make it reload them."""

    password_file: Path
    acl_file: Path
    pid_file: Path | None = None
    reload_command: str | None = None

    def write(self, passwords: list[tuple[str, str]], devices: list[str], bridge_users: list[str]) -> None:
        _atomic_write(self.password_file, credentials.password_file_text(passwords))
        _atomic_write(self.acl_file, credentials.acl_text(devices, bridge_users))

    def reload(self) -> bool:
        """Ask Mosquitto to re-read the files; False when there is no way to reach it."""
        if self.reload_command:
            subprocess.run(self.reload_command, shell=True, check=True, timeout=30)
            return True
        if self.pid_file is not None and self.pid_file.exists():
            try:
                pid = int(self.pid_file.read_text().strip())
                os.kill(pid, signal.SIGHUP)
                return True
            except (ValueError, ProcessLookupError) as exc:
                log.warning("cannot signal mosquitto from pid_file=%s: %s", self.pid_file, exc)
        return False


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        _give_to_mosquitto_group(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _give_to_mosquitto_group(path: str) -> None:
    """Mosquitto drops to its own user: let its group read the files (not everyone)."""
    try:
        import grp

        os.chown(path, -1, grp.getgrnam("mosquitto").gr_gid)
    except (KeyError, PermissionError, ImportError):
        pass


def parse_value(text: str) -> Any:
    """``42`` -> 42, ``true`` -> True, ``"x"``/``x`` -> "x", ``[1,2]`` -> [1, 2]."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RegistryError(f"{item!r} is not key=value")
        out[key.strip()] = parse_value(value)
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Registry:
    db_path: Path | str
    mosquitto: MosquittoFiles | None = None
    db: sqlite_utils.Database = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.db_path, str) and self.db_path != ":memory:":
            self.db_path = Path(self.db_path)
        if isinstance(self.db_path, Path):
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(self.db_path)
        if isinstance(self.db_path, Path):
            self.db.enable_wal()  # brokers read it (embedded auth) while vigil devices writes
        if "devices" not in self.db.table_names():
            self.db.table("devices").create({"id": str, "kind": str, "name": str, "meta": str, "config": str,
                                       "password_hash": str, "created_at": str, "revoked_at": str},
                                      pk="id", not_null={"kind", "name", "created_at"})
        if "bridge_users" not in self.db.table_names():
            self.db.table("bridge_users").create({"name": str, "password_hash": str, "created_at": str}, pk="name")

    # --- devices -----------------------------------------------------------------------

    def add(self, device: str, kind: str, name: str = "", meta: Mapping[str, Any] | None = None) -> str:
        """Register ``device``; returns its MQTT password (shown once, stored hashed)."""
        try:
            wire.check_device_id(device)
        except wire.WireError as exc:
            raise RegistryError(str(exc)) from None
        if kind not in KINDS:
            raise RegistryError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if self._row(device) is not None:
            raise RegistryError(f"device {device!r} is already registered")
        if device in {r["name"] for r in self.db.table("bridge_users").rows}:
            raise RegistryError(f"{device!r} is a bridge user's name")
        password = credentials.new_password()
        self.db.table("devices").insert({
            "id": device, "kind": kind, "name": name or device, "meta": json.dumps(dict(meta or {})),
            "config": "{}", "password_hash": credentials.hash_password(password),
            "created_at": _now(), "revoked_at": None})
        self._publish_files()
        log.info("device added id=%s kind=%s", device, kind)
        return password

    def get(self, device: str) -> Device:
        row = self._row(device)
        if row is None:
            raise RegistryError(f"no device {device!r}")
        return _device(row)

    def list(self, *, include_revoked: bool = True) -> list[Device]:
        rows = self.db.table("devices").rows_where(None if include_revoked else "revoked_at is null",
                                             order_by="id")
        return [_device(r) for r in rows]

    def revoke(self, device: str) -> Device:
        """Remove ``device``'s credentials: Mosquitto drops it on reload."""
        d = self.get(device)
        if not d.active:
            raise RegistryError(f"device {device!r} was already revoked at {d.revoked_at}")
        self.db.table("devices").update(device, {"password_hash": None, "revoked_at": _now()})
        self._publish_files()
        log.info("device revoked id=%s", device)
        return self.get(device)

    def set_config(self, device: str, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into the device's remote config (a None value removes a key)."""
        d = self.get(device)
        if not d.active:
            raise RegistryError(f"device {device!r} is revoked")
        config = {**d.config, **updates}
        config = {k: v for k, v in config.items() if v is not None}
        self.db.table("devices").update(device, {"config": json.dumps(config)})
        return config

    # --- the bridge's own MQTT users -----------------------------------------------------

    def set_bridge_user(self, name: str) -> str:
        """Create (or rotate) a bridge user; returns its password."""
        if self._row(name) is not None:
            raise RegistryError(f"{name!r} is a device id")
        password = credentials.new_password()
        self.db.table("bridge_users").upsert({"name": name, "password_hash": credentials.hash_password(password),
                                        "created_at": _now()}, pk="name")
        self._publish_files()
        return password

    def mqtt_user(self, user: str) -> tuple[str, str] | None:
        """(role, password hash) of an MQTT user allowed in now: an active device
        (``device``) or a bridge user (``bridge``); None for anyone else."""
        row = self._row(user)
        if row is not None:
            return ("device", row["password_hash"]) if row["revoked_at"] is None else None
        for r in self.db.table("bridge_users").rows_where("name = ?", [user]):
            return "bridge", r["password_hash"]
        return None

    # --- Mosquitto ------------------------------------------------------------------------

    def _publish_files(self) -> None:
        if self.mosquitto is None:
            return
        devices = [r for r in self.db.table("devices").rows_where("revoked_at is null")]
        bridges = list(self.db.table("bridge_users").rows)
        passwords = [(r["id"], r["password_hash"]) for r in devices] + \
                    [(r["name"], r["password_hash"]) for r in bridges]
        self.mosquitto.write(passwords, [r["id"] for r in devices], [r["name"] for r in bridges])
        if not self.mosquitto.reload():
            log.warning("mosquitto files written but mosquitto was not asked to reload "
                        "(no pid file or reload command configured)")

    def _row(self, device: str) -> dict[str, Any] | None:
        try:
            return dict(self.db.table("devices").get(device))
        except NotFoundError:
            return None


def _device(row: Mapping[str, Any]) -> Device:
    return Device(row["id"], row["kind"], row["name"], json.loads(row["meta"] or "{}"),
                  json.loads(row["config"] or "{}"), row["created_at"], row["revoked_at"])
