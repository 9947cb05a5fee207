"""Deploy fixtures: deploy/mosquitto/vigil.conf run by the real Mosquitto, moved to temporary
paths and free loopback ports, with a throwaway CA and server certificate, and the device
registry driven through the `vigil devices` command as an admin would."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.conftest import ROOT, free_port, start_logged, stop_process, wait_for_port
from tests.gateway.conftest import MOSQUITTO, wait_until

VIGIL_CONF = ROOT / "deploy" / "mosquitto" / "vigil.conf"
ACCEPTED = 0
REFUSED = {0x86, 0x87}  # MQTT 5: bad user name or password, not authorized


def make_ca_and_server_cert(out: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for localhost and 127.0.0.1; returns the
    (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "ca.crt", out / "server.crt", out / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def adapt_conf(text: str, replacements: dict[str, str]) -> str:
    """vigil.conf with whole lines replaced; every line to replace must be there once, so
    the test fails when the shipped file changes shape instead of testing something else."""
    lines = text.splitlines()
    for old, new in replacements.items():
        hits = [i for i, line in enumerate(lines) if line == old]
        assert len(hits) == 1, f"deploy/mosquitto/vigil.conf should have the line {old!r} once"
        lines[hits[0]] = new
    return "\n".join(lines) + "\n"


@dataclass
class DeployedMosquitto:
    """Mosquitto running deploy/mosquitto/vigil.conf; `vigil devices` pointed at its files
    through the same VIGIL_* variables as /etc/vigil/vigil.env."""

    workdir: Path
    tls_port: int = field(default_factory=free_port)
    local_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.mqtt_dir = self.workdir / "etc-mosquitto-vigil"
        self.ca, self.cert, self.key = make_ca_and_server_cert(self.workdir / "certs")
        self.pid_file = self.workdir / "mosquitto.pid"
        self.conf = self.workdir / "vigil.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.env = {
            **os.environ,
            "VIGIL_REGISTRY": str(self.workdir / "registry.db"),
            "VIGIL_MOSQUITTO_PASSWD": str(self.mqtt_dir / "passwd"),
            "VIGIL_MOSQUITTO_ACL": str(self.mqtt_dir / "acl"),
            # on a server vigil-mosquitto-reload.path reloads Mosquitto; here, its pid file
            "VIGIL_MOSQUITTO_PID_FILE": str(self.pid_file),
        }
        self.env.pop("VIGIL_MOSQUITTO_RELOAD", None)

    def vigil(self, *args: str) -> str:
        """`vigil ARGS` as the admin runs it; returns its standard output."""
        done = subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"vigil {' '.join(args)}: {done.stderr}"
        return done.stdout

    def add_device(self, device: str, kind: str = "vehicle") -> str:
        return self.vigil("devices", "add", device, "--kind", kind).strip()

    def start(self) -> DeployedMosquitto:
        self.mqtt_dir.mkdir(parents=True, exist_ok=True)
        for f in ("passwd", "acl"):
            (self.mqtt_dir / f).touch()
        user = "root" if os.geteuid() == 0 else "mosquitto"  # pytest's tmp dirs are 0700
        self.conf.write_text(adapt_conf(VIGIL_CONF.read_text(), {
            "user mosquitto": f"user {user}",
            "pid_file /run/mosquitto/mosquitto.pid": f"pid_file {self.pid_file}",
            "password_file /etc/mosquitto/vigil/passwd": f"password_file {self.mqtt_dir / 'passwd'}",
            "acl_file /etc/mosquitto/vigil/acl": f"acl_file {self.mqtt_dir / 'acl'}",
            "listener 8883": f"listener {self.tls_port} 127.0.0.1",
            "certfile /etc/mosquitto/certs/server.crt": f"certfile {self.cert}",
            "keyfile /etc/mosquitto/certs/server.key": f"keyfile {self.key}",
            "listener 1883 127.0.0.1": f"listener {self.local_port} 127.0.0.1",
            "persistence_location /var/lib/mosquitto/": f"persistence_location {self.workdir}/",
        }))
        self.proc = start_logged([MOSQUITTO, "-c", str(self.conf)], self.log_path, self.tls_port)
        wait_for_port(self.local_port, proc=self.proc)
        wait_until(lambda: self.pid_file.exists() and self.pid_file.read_text().strip() != "",
                   5, "mosquitto's pid file")
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Client:
    """An MQTT 5 client that records what it receives; ``connect`` returns the CONNACK's
    reason code (0 = accepted) or raises for a transport failure (no TLS, bad certificate)."""

    def __init__(self, client_id: str, username: str | None = None, password: str | None = None,
                 ca: Path | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.connack = threading.Event()
        self.reason: int | None = None
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        self.reason = int(getattr(reason, "value", reason))  # type: ignore[call-overload]
        self.connack.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def connect(self, host: str, port: int) -> int:
        self.client.connect(host, port, keepalive=10, clean_start=True)
        self.client.loop_start()
        assert self.connack.wait(10), "no CONNACK"
        assert self.reason is not None
        return self.reason

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def deployed_mosquitto(tmp_path: Path) -> Iterator[DeployedMosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    m = DeployedMosquitto(tmp_path / "mosquitto")
    try:
        yield m
    finally:
        m.stop()


@dataclass
class Site:
    mosquitto: DeployedMosquitto
    passwords: dict[str, str]
    bridge_password: str
    clients: list[Client]

    def device(self, device: str, password: str | None = None) -> Client:
        """``device`` connected over TLS on the devices' listener, checking the server
        certificate against the site's CA."""
        c = self.client(device, device, self.passwords[device] if password is None else password)
        reason = c.connect("localhost", self.mosquitto.tls_port)
        assert reason == ACCEPTED, f"{device} refused: {reason:#x}\n{self.mosquitto.log()[-2000:]}"
        return c

    def client(self, client_id: str, username: str | None, password: str | None,
               tls: bool = True) -> Client:
        c = Client(client_id, username, password, self.mosquitto.ca if tls else None)
        self.clients.append(c)
        return c

    def bridge(self) -> Client:
        c = self.client(f"bridge-{uuid.uuid4().hex[:6]}", "vigil-bridge", self.bridge_password, tls=False)
        assert c.connect("127.0.0.1", self.mosquitto.local_port) == ACCEPTED
        return c


@pytest.fixture
def site(deployed_mosquitto: DeployedMosquitto) -> Iterator[Site]:
    m = deployed_mosquitto
    passwords = {d: m.add_device(d) for d in ("truck-7", "truck-8")}
    bridge_file = m.workdir / "bridge.password"
    m.vigil("devices", "bridge-user", "vigil-bridge", "--password-out", str(bridge_file))
    s = Site(m.start(), passwords, bridge_file.read_text().strip(), [])
    try:
        yield s
    finally:
        for c in s.clients:
            c.close()


def device_toml(device: str, host: str, port: int, outbox: Path, *, rate: float = 10,
                limit: int | None = None) -> str:
    """A device config as deploy/INSTALL.md writes it (password and CA in files next to
    it), with the counter test sensor instead of a GPS."""
    return f"""\
[device]
id = "{device}"
kind = "vehicle"

[mqtt]
host = "{host}"
port = {port}
username = "{device}"
password_file = "mqtt.password"
reconnect_min_s = 0.1
reconnect_max_s = 1
[mqtt.tls]
ca = "ca.crt"

[outbox]
path = "{outbox}"

[agent]
sensor_modules = ["tests.edge.counter_sensor"]

[[sensors]]
name = "count"
type = "counter"
rate = {rate}
{f"limit = {limit}" if limit is not None else ""}
period_s = 0
deadband = 0
"""
