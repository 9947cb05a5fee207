"""The registry and its credentials, checked against the real Mosquitto and its tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge import wire
from gateway import credentials
from gateway.registry import Registry, RegistryError
from tests.conftest import ROOT
from tests.gateway.conftest import Device, SecureMosquitto, Site, wait_until

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def test_our_hash_verifies_like_mosquitto_passwds(tmp_path: Path) -> None:
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("mosquitto_passwd is not installed")
    f = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(f), "alice", "s3cret"], check=True)
    user, stored = f.read_text().strip().split(":", 1)
    assert user == "alice"
    assert credentials.verify_password("s3cret", stored)
    assert not credentials.verify_password("s3cret!", stored)
    ours = credentials.hash_password("s3cret")
    assert ours.startswith("$7$101$") and credentials.verify_password("s3cret", ours)


def test_mosquitto_accepts_our_password_file(site: Site) -> None:
    password = site.add_device("truck-1")
    assert "truck-1:$7$101$" in site.mosquitto.passwd.read_text()
    Device(site.mosquitto.port, "truck-1", password).start().stop()  # connects, or raises


def test_devices_are_listed_shown_and_revoked(registry: Registry, mosquitto: SecureMosquitto) -> None:
    registry.add("bed-4", "patient", "Bed 4, ward B", {"bed": "B4", "spo2_scale": 2})
    registry.add("truck-1", "vehicle", meta={"speed_limit_kmh": 90})
    assert [d.id for d in registry.list()] == ["bed-4", "truck-1"]
    d = registry.get("bed-4")
    assert (d.kind, d.name, d.meta, d.active) == ("patient", "Bed 4, ward B", {"bed": "B4", "spo2_scale": 2}, True)
    registry.revoke("truck-1")
    assert "truck-1" not in mosquitto.passwd.read_text() and "truck-1" not in mosquitto.acl.read_text()
    assert not registry.get("truck-1").active
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("bed-4", "patient")
    with pytest.raises(RegistryError, match="kind"):
        registry.add("x-1", "boat")
    with pytest.raises(RegistryError, match="invalid"):
        registry.add("no/slashes", "vehicle")


def test_the_cli_adds_a_device_that_can_then_connect(tmp_path: Path, mosquitto: SecureMosquitto) -> None:
    base = [sys.executable, "-m", "deploy.cli", "devices", "--registry", str(tmp_path / "reg.db"),
            "--mosquitto-passwd", str(mosquitto.passwd), "--mosquitto-acl", str(mosquitto.acl),
            "--mosquitto-pid-file", str(mosquitto.pid_file)]
    out = subprocess.run([*base, "add", "truck-3", "--kind", "vehicle", "--name", "Truck 3",
                          "--meta", "speed_limit_kmh=80"], cwd=ROOT, capture_output=True, text=True, check=True)
    password = out.stdout.strip()
    assert len(password) >= 24 and "shown only now" in out.stderr
    time.sleep(0.3)
    Device(mosquitto.port, "truck-3", password).start().stop()
    shown = json.loads(subprocess.run([*base, "show", "truck-3"], cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout)
    assert shown["meta"] == {"speed_limit_kmh": 80} and shown["name"] == "Truck 3"
    listed = subprocess.run([*base, "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "truck-3" in listed and "active" in listed
    subprocess.run([*base, "revoke", "truck-3"], cwd=ROOT, check=True, capture_output=True)
    time.sleep(0.3)
    d = Device(mosquitto.port, "truck-3", password).start(wait=False)
    time.sleep(1)
    assert not d.connected.is_set()
    d.stop()
    bad = subprocess.run([*base, "show", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "no device 'nope'" in bad.stderr


def test_remote_config_reaches_the_device_retained(tmp_path: Path, site: Site) -> None:
    password = site.add_device("bed-2", "patient")
    base = [sys.executable, "-m", "deploy.cli", "devices", "--registry", str(site.registry.db_path),
            "--mosquitto-passwd", str(site.mosquitto.passwd), "--mosquitto-acl", str(site.mosquitto.acl),
            "--mosquitto-pid-file", str(site.mosquitto.pid_file)]
    subprocess.run([*base, "config", "bed-2", "sample_hz=2", "spo2_scale=2", "label=ICU",
                    "--mqtt", f"127.0.0.1:{site.mosquitto.port}", "--username", "vigil-bridge",
                    "--password-file", str(site.bridge_password_file)], cwd=ROOT, check=True,
                   capture_output=True)
    got: list[dict[str, object]] = []
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bed-2")  # the device, connecting later
    c.username_pw_set("bed-2", password)
    c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(wire.config_topic("bed-2"), qos=1), ready.set())
    c.on_message = lambda cl, u, m: got.append(wire.decode_config(m.payload))
    c.connect("127.0.0.1", site.mosquitto.port)
    c.loop_start()
    try:
        wait_until(lambda: bool(got), 10, "the retained config")
    finally:
        c.disconnect()
        c.loop_stop()
    assert got == [{"sample_hz": 2, "spo2_scale": 2, "label": "ICU"}]
    assert site.registry.get("bed-2").config == got[0]


def test_config_without_the_bridge_login_says_so(tmp_path: Path, site: Site) -> None:
    site.add_device("bed-2", "patient")
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "devices", "--registry", str(site.registry.db_path),
                          "--mosquitto-passwd", str(site.mosquitto.passwd), "--mosquitto-acl",
                          str(site.mosquitto.acl), "config", "bed-2", "sample_hz=2",
                          "--mqtt", f"127.0.0.1:{site.mosquitto.port}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "saved but not published" in out.stderr and "refused" in out.stderr
    assert "Traceback" not in out.stderr
