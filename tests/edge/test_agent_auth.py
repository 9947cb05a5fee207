"""Per-device credentials: a client certificate over TLS, or a username and password; wrong
credentials keep the agent retrying (with backoff), storing readings, never crashing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent_cli import load_device_config
from tests.conftest import free_port
from tests.edge.conftest import FakeGateway, Mosquitto, device_toml, wait_until
from tests.edge.test_agent_mqtt import running

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, device: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=vigil test CA",
            cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn, ext in (("server", "127.0.0.1", ["-extfile", "san.ext"]), (device, device, [])):
        openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", *ext, cwd=d)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, int]]:
    """Mosquitto with an open listener (for the fake gateway), a TLS listener requiring a
    client certificate whose CN is the username, and a password listener."""
    pki = tmp_path / "pki"
    make_pki(pki, "truck-tls")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "truck-pw", "right horse"],
                   check=True, capture_output=True)
    (tmp_path / "passwd").chmod(0o600)
    tls_port, pw_port = free_port(), free_port()
    m = Mosquitto(tmp_path / "mqtt", extra_conf=(
        f"listener {tls_port} 127.0.0.1\nallow_anonymous false\nrequire_certificate true\n"
        f"use_identity_as_username true\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\n"
        f"listener {pw_port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path}/passwd\n")).start()
    try:
        yield m, tls_port, pw_port
    finally:
        m.stop()


def test_client_certificate_and_password_logins_deliver_and_a_wrong_password_only_retries(
        tmp_path: Path, secured: tuple[Mosquitto, int, int]) -> None:
    m, tls_port, pw_port = secured
    gw = FakeGateway(m.port).start()
    try:
        pki = tmp_path / "pki"
        tls = device_toml(tmp_path, "truck-tls", tls_port, rate=50, limit=20)
        tls.write_text(tls.read_text().replace("[outbox]", f'[mqtt.tls]\nca = "{pki}/ca.pem"\n'
                                               f'cert = "{pki}/truck-tls.pem"\nkey = "{pki}/truck-tls.key"\n\n[outbox]'))
        (tmp_path / "pw").write_text("right horse\n")
        good = device_toml(tmp_path, "truck-pw", pw_port, rate=50, limit=20)
        good.write_text(good.read_text().replace("keepalive", 'username = "truck-pw"\npassword_file = "pw"\nkeepalive'))
        bad = device_toml(tmp_path, "truck-bad", pw_port, rate=50, limit=20)
        bad.write_text(bad.read_text().replace("keepalive", 'username = "truck-pw"\npassword = "wrong"\nkeepalive'))
        with running(load_device_config(tls)) as a, running(load_device_config(good)) as b, \
                running(load_device_config(bad)) as c:
            wait_until(lambda: a.outbox.acked == 20 and b.outbox.acked == 20, what="both logins delivering")
            time.sleep(0.5)
            assert c.publisher.connects == 0 and c.outbox.stats().depth == 20  # kept, not sent
        assert sorted(set(gw.seqs("truck-tls"))) == sorted(set(gw.seqs("truck-pw"))) == list(range(1, 21))
        assert gw.seqs("truck-bad") == []
    finally:
        gw.stop()


def test_check_mqtt_reports_whether_the_login_is_accepted(tmp_path: Path, secured: tuple[Mosquitto, int, int]) -> None:
    import io

    from edge.agent_cli import check_device

    _, _, pw_port = secured
    (tmp_path / "pw").write_text("right horse\n")
    good = device_toml(tmp_path, "truck-pw", pw_port)
    good.write_text(good.read_text().replace("keepalive", 'username = "truck-pw"\npassword_file = "pw"\nkeepalive'))
    out = io.StringIO()
    assert check_device(load_device_config(good), mqtt=True, timeout=2, out=out)
    assert f"ok   mqtt 127.0.0.1:{pw_port}: login accepted" in out.getvalue()
    good.write_text(good.read_text().replace('password_file = "pw"', 'password = "wrong"'))
    out = io.StringIO()
    assert not check_device(load_device_config(good), mqtt=True, timeout=2, out=out)
    assert f"FAIL mqtt 127.0.0.1:{pw_port}: refused: Not authorized" in out.getvalue()
    closed = device_toml(tmp_path, "truck-x", free_port())
    out = io.StringIO()
    assert not check_device(load_device_config(closed), mqtt=True, timeout=2, out=out)
    assert "FAIL mqtt" in out.getvalue() and "cannot connect" in out.getvalue()
