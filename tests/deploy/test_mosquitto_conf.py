"""deploy/mosquitto/vigil.conf on the real Mosquitto, with the password and ACL files that
`vigil devices` writes: devices come in over TLS with their own password and stay on
their own topics; nobody gets in anonymously; the bridge uses the loopback listener."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from edge import wire
from tests.conftest import ROOT
from tests.deploy.conftest import ACCEPTED, REFUSED, Site, device_toml, make_ca_and_server_cert
from tests.gateway.conftest import wait_until


def test_mosquitto_takes_the_config_without_a_complaint(site: Site) -> None:
    complaints = [line for line in site.mosquitto.log().splitlines()
                  if ("Error" in line or "Warning" in line or "Note" in line or "deprecated" in line)
                  and "should not be run as root" not in line]  # the test's user, not the site's
    assert complaints == []


def test_a_registered_device_connects_over_tls_with_its_password(site: Site) -> None:
    site.device("truck-7")
    wrong = site.client("truck-8", "truck-8", site.passwords["truck-7"])
    assert wrong.connect("localhost", site.mosquitto.tls_port) in REFUSED


def test_nobody_gets_in_anonymously_on_either_listener(site: Site) -> None:
    tls = site.client("anon-tls", None, None)
    assert tls.connect("localhost", site.mosquitto.tls_port) in REFUSED
    local = site.client("anon-local", None, None, tls=False)
    assert local.connect("127.0.0.1", site.mosquitto.local_port) in REFUSED
    unknown = site.client("truck-99", "truck-99", "guess")
    assert unknown.connect("localhost", site.mosquitto.tls_port) in REFUSED


def test_the_device_port_speaks_only_tls_with_the_sites_certificate(site: Site) -> None:
    # a plain MQTT CONNECT (client id "x") gets no CONNACK: the connection is dropped
    with socket.create_connection(("127.0.0.1", site.mosquitto.tls_port), timeout=10) as plain:
        plain.sendall(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x0a\x00\x01x")
        try:
            answer = plain.recv(16)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"\x20")
    # the certificate the site's CA signed, for the name the devices are given
    context = ssl.create_default_context(cafile=str(site.mosquitto.ca))
    with socket.create_connection(("127.0.0.1", site.mosquitto.tls_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusted = ssl.create_default_context()  # the system's CAs only
    with socket.create_connection(("127.0.0.1", site.mosquitto.tls_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        untrusted.wrap_socket(raw, server_hostname="localhost")


def test_a_device_publishes_only_to_its_own_topics(site: Site) -> None:
    bridge = site.bridge()
    bridge.client.subscribe([("vigil/+/events", 1), ("vigil/+/status", 1)])
    wait_until(lambda: bridge.client.is_connected(), 5, "the bridge's subscription")
    truck = site.device("truck-7")
    # refused ones first: one publisher's messages reach a subscriber in order, so once
    # the last (allowed) one arrives, none refused can still be on its way
    for topic in (wire.events_topic("truck-8"), wire.status_topic("truck-8"), "vigil/truck-7/other",
                  wire.ack_topic("truck-7"), "elsewhere"):
        truck.client.publish(topic, b"not allowed", qos=1).wait_for_publish(10)
    truck.client.publish(wire.status_topic("truck-7"), b"online", qos=1).wait_for_publish(10)
    truck.client.publish(wire.events_topic("truck-7"), b"last", qos=1).wait_for_publish(10)
    wait_until(lambda: wire.events_topic("truck-7") in bridge.topics(), 10, "truck-7's events")
    assert bridge.topics() == [wire.status_topic("truck-7"), wire.events_topic("truck-7")]


def test_a_device_reads_only_its_own_acks_and_config(site: Site) -> None:
    truck = site.device("truck-7")
    truck.client.subscribe([("vigil/+/ack", 1), ("vigil/+/config", 1)])
    bridge = site.bridge()
    wait_until(lambda: truck.client.is_connected(), 5, "truck-7's subscription")
    for device in ("truck-8", "truck-7"):
        bridge.client.publish(wire.config_topic(device), b"{}", qos=1).wait_for_publish(10)
        bridge.client.publish(wire.ack_topic(device), b"1", qos=1).wait_for_publish(10)
    wait_until(lambda: wire.ack_topic("truck-7") in truck.topics(), 10, "truck-7's ack")
    assert truck.topics() == [wire.config_topic("truck-7"), wire.ack_topic("truck-7")]


def test_devices_added_and_revoked_while_mosquitto_runs(site: Site) -> None:
    """`vigil devices add|revoke` rewrite the files and have Mosquitto reload them (here by
    its pid file; on a server vigil-mosquitto-reload.path does it)."""
    password = site.mosquitto.add_device("bed-1", "patient")
    site.passwords["bed-1"] = password

    def accepted(device: str) -> bool:
        c = site.client(device, device, site.passwords[device])
        return c.connect("localhost", site.mosquitto.tls_port) == ACCEPTED

    wait_until(lambda: accepted("bed-1"), 10, "the new device to be let in")
    site.mosquitto.vigil("devices", "revoke", "truck-8")
    wait_until(lambda: not accepted("truck-8"), 10, "the revoked device to be refused")
    assert accepted("truck-7")


def test_a_device_configured_as_install_md_says_logs_in_with_the_real_agent(site: Site, tmp_path: Path) -> None:
    """`vigil edge check --mqtt` with a device.toml like deploy/INSTALL.md's: port 8883's
    stand-in, the site's CA, the password from `vigil devices add` in a file."""
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    (device_dir / "mqtt.password").write_text(site.passwords["truck-7"] + "\n")
    (device_dir / "ca.crt").write_bytes(site.mosquitto.ca.read_bytes())
    config = device_dir / "device.toml"
    config.write_text(device_toml("truck-7", "localhost", site.mosquitto.tls_port, tmp_path / "outbox.sqlite"))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deploy.cli", "edge", "check", "--config", str(config),
                               "--mqtt"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    ok = check()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok   mqtt localhost:{site.mosquitto.tls_port}: login accepted" in ok.stdout
    # a gateway whose certificate the device's CA did not sign is not trusted
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    (device_dir / "ca.crt").write_bytes(other_ca.read_bytes())
    refused = check()
    assert refused.returncode == 1
    assert f"FAIL mqtt localhost:{site.mosquitto.tls_port}" in refused.stdout
    assert "certificate" in refused.stdout.lower(), refused.stdout
