"""`vigil edge bundle`: what a device config ships with, and a bundle that installs offline."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.cli import main
from edge.bundle import BundleError, inspect_config, load_device_config, manifest

CONFIG = """\
[device]
id = "bed-12"
kind = "patient"

[mqtt]
host = "gateway.example"
password_file = "secret/mqtt"

[mqtt.tls]
ca = "ca.pem"
key = "bed-12.key"
cert = "bed-12.pem"
"""


def write_device(d: Path, text: str = CONFIG) -> Path:
    (d / "secret").mkdir(parents=True, exist_ok=True)
    (d / "secret" / "mqtt").write_text("hunter2\n")
    for name in ("ca.pem", "bed-12.key", "bed-12.pem"):
        (d / name).write_text(f"{name}\n")
    (d / "device.toml").write_text(text)
    return d / "device.toml"


# --- which files a config ships with (pure) ------------------------------------------


def test_secrets_and_certificates_named_by_the_config() -> None:
    doc = {"device": {"id": "bed-12"}, "mqtt": {
        "password_file": "secret/mqtt", "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.key"}}}
    config = inspect_config(doc, Path("/cfg/device.toml"))
    assert config.device == "bed-12"
    assert [(f.key, str(f.path), f.secret) for f in config.files] == [
        ("mqtt.password_file", "secret/mqtt", True),
        ("mqtt.tls.key", "k.key", True),
        ("mqtt.tls.cert", "c.pem", False),
        ("mqtt.tls.ca", "ca.pem", False)]
    assert config.problems == ()


def test_a_config_without_secrets_ships_alone() -> None:
    config = inspect_config({"mqtt": {"password": "inline"}}, Path("device.toml"))
    assert (config.files, config.device, config.writable_dirs, config.problems) == ((), None, (), ())


def test_an_absolute_or_escaping_path_is_refused() -> None:
    config = inspect_config(
        {"mqtt": {"password_file": "/home/me/pw", "tls": {"key": "../keys/k.key"}}}, Path("d.toml"))
    assert config.files == ()
    assert "mqtt.password_file = '/home/me/pw' is absolute" in config.problems[0]
    assert "mqtt.tls.key = '../keys/k.key' must name a file beside or below" in config.problems[1]


def test_the_outbox_folder_is_made_writable_or_refused() -> None:
    inside = inspect_config({"outbox": {"path": "/var/lib/vigil/o.sqlite"}}, Path("d.toml"))
    outside = inspect_config({"outbox": {"path": "/data/vigil/o.sqlite"}}, Path("d.toml"))
    relative = inspect_config({"outbox": {"path": "o.sqlite"}}, Path("d.toml"))
    assert inside.writable_dirs == () and outside.writable_dirs == ("/data/vigil",)
    assert "where the agent may not write" in relative.problems[0]


def test_an_inline_pem_key_travels_inside_the_config() -> None:
    config = inspect_config({"mqtt": {"tls": {"key": "-----BEGIN PRIVATE KEY-----\nAA\n"}}}, Path("d"))
    assert config.files == ()


def test_manifest_lists_versions_and_sums() -> None:
    doc = manifest(
        {"wheels/vigil-0.1.0-py3-none-any.whl": "aa", "wheels/paho_mqtt-2.2.0-py3-none-any.whl": "bb",
         "install.sh": "cc"},
        ["etc/device.toml"], device="bed-12", python_version="3.11",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert doc["vigil"] == "0.1.0" and doc["created"] == "2026-01-02T03:04:05Z"
    assert {(w["name"], w["version"]) for w in doc["wheels"]} == {("vigil", "0.1.0"), ("paho-mqtt", "2.2.0")}
    assert doc["files"]["install.sh"] == "cc"
    assert doc["config_files"] == ["etc/device.toml"] and "etc/device.toml" not in doc["files"]


# --- loading a config from disk ------------------------------------------------------


def test_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"device config .*device\.toml does not exist"):
        load_device_config(tmp_path / "device.toml")


def test_a_config_that_is_not_toml(tmp_path: Path) -> None:
    (tmp_path / "device.toml").write_text("[mqtt\nhost = 1\n")
    with pytest.raises(BundleError, match="is not valid TOML"):
        load_device_config(tmp_path / "device.toml")


def test_a_config_naming_a_missing_file(tmp_path: Path) -> None:
    path = write_device(tmp_path)
    (tmp_path / "bed-12.key").unlink()
    with pytest.raises(BundleError, match=r"mqtt\.tls\.key names .*bed-12\.key, which is not a file"):
        load_device_config(path)


def test_a_config_the_agent_would_refuse_is_refused_here(tmp_path: Path) -> None:
    path = write_device(tmp_path, CONFIG.replace('kind = "patient"', 'kind = "boat"'))
    with pytest.raises(BundleError, match=r"device\.kind"):
        load_device_config(path)


def test_bundle_refuses_to_overwrite_a_folder_that_is_not_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_device(tmp_path / "dev")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("years of work")
    assert main(["edge", "bundle", "--config", str(path), "--out", str(tmp_path / "docs")]) == 1
    assert "is not a bundle: refusing to overwrite it" in capsys.readouterr().err
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "years of work"


# --- a real bundle, installed offline in a fresh venv ------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle")
    config = write_device(d / "bed-12")
    assert main(["edge", "bundle", "--config", str(config), "--out", str(d / "out.tar.gz")]) == 0
    with tarfile.open(d / "out.tar.gz") as tar:
        tar.extractall(d, filter="data")
    assert stat.S_IMODE((d / "out.tar.gz").stat().st_mode) == 0o600  # it holds secrets
    return d / "vigil-bundle"


def test_the_bundle_holds_pure_wheels_the_config_and_its_sums(built: Path) -> None:
    doc = json.loads((built / "manifest.json").read_text())
    names = {w["name"] for w in doc["wheels"]}
    assert {"vigil", "paho-mqtt", "pyserial", "gpiozero", "colorzero"} <= names
    assert all(w["file"].endswith("-none-any.whl") for w in doc["wheels"])
    assert doc["device"] == "bed-12"
    assert (built / "etc" / "device.toml").read_text() == CONFIG
    assert (built / "etc" / "secret" / "mqtt").read_text() == "hunter2\n"
    assert stat.S_IMODE((built / "etc" / "secret" / "mqtt").stat().st_mode) == 0o600
    # what install.sh checks on the device before installing
    subprocess.run(["sha256sum", "--check", "--quiet", "--strict", "SHA256SUMS"], cwd=built, check=True)
    assert set(doc["files"]) == {line.split("  ", 1)[1] for line in
                                 (built / "SHA256SUMS").read_text().splitlines()} - {"manifest.json"}


def test_the_bundle_installs_offline_in_a_fresh_venv(built: Path, tmp_path: Path) -> None:
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # as on a device: no pip configuration, no index, nothing but the bundle's wheels
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [venv / "bin" / "pip", "install", "--no-index", "--find-links", built / "wheels", "vigil[edge]"],
        check=True, env=env, capture_output=True)
    run = subprocess.run([venv / "bin" / "vigil", "edge", "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=True)
    for action in ("bundle", "flash"):
        assert action in run.stdout
    subprocess.run([venv / "bin" / "python", "-c", "import paho.mqtt.client, serial, gpiozero, edge.wire"],
                   check=True, env=env, cwd=tmp_path)


def test_the_bundle_bootstraps_a_venv_without_ensurepip_as_a_device_does(
    built: Path, tmp_path: Path,
) -> None:
    """install.sh's way: a venv without pip, then pip run from its bundled wheel."""
    lines = (built / "install.sh").read_text().splitlines()
    (pip_line,) = [line for line in lines if "/pip install " in line]
    venv = tmp_path / "opt-vigil"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "B": str(built)}
    subprocess.run(["sh", "-euc", pip_line.replace("/opt/vigil", str(venv))], check=True, env=env,
                   capture_output=True)
    run = subprocess.run([venv / "bin" / "vigil", "edge", "flash", "--help"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=True)
    assert "--image" in run.stdout
    assert (venv / "bin" / "pip").exists()  # pip came along for later use


# --- first boot, played in a mount namespace ---------------------------------------------

CHECK = """
import grp, json, os, pwd, stat, subprocess
def info(p):
    st = os.stat(p)
    return [oct(stat.S_IMODE(st.st_mode)), pwd.getpwuid(st.st_uid).pw_name]
etc = {}
for root, _, files in os.walk("/etc/vigil"):
    for f in files:
        etc[os.path.relpath(os.path.join(root, f), "/etc/vigil")] = info(os.path.join(root, f))
fat = []
for root, _, files in os.walk("/boot/firmware/vigil"):
    fat += [os.path.relpath(os.path.join(root, f), "/boot/firmware/vigil") for f in files]
print(json.dumps({
    "etc": etc, "etc_dir": info("/etc/vigil"), "fat": sorted(fat),
    "groups": sorted(g.gr_name for g in grp.getgrall() if "vigil" in g.gr_mem),
    "shell": pwd.getpwnam("vigil").pw_shell,
    "unit": open("/etc/systemd/system/vigil-edge.service").read(),
    "password": open("/etc/vigil/secret/mqtt").read(),
    "agent": subprocess.run(["/opt/vigil/bin/vigil", "edge", "flash", "--help"],
                            capture_output=True).returncode,
}))
"""

NAMESPACE = """
set -e
for d in etc var; do mkdir -p "$T/$d-up" "$T/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d-up,workdir=$T/$d-work" "/$d"; done
mount -t tmpfs tmpfs /opt
mount -t tmpfs tmpfs /boot
mkdir /boot/firmware
cp -R "$T/fat/vigil" /boot/firmware/vigil
PATH="$T/stub:$PATH" sh "$T/runcmd.sh" > "$T/runcmd.log" 2>&1
python3 "$T/check.py" > "$T/result.json"
"""


def _can_play_first_boot() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("useradd"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", "mount -t tmpfs tmpfs /opt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not shutil.which("mcopy") or not _can_play_first_boot(),
                    reason="needs root, unshare, overlayfs and mtools")
def test_first_boot_installs_the_agent_and_leaves_no_secret_on_the_boot_partition(
    built: Path, tmp_path: Path,
) -> None:
    """The flashed user-data's runcmd, run as cloud-init would, as root, in a mount namespace:
    /etc and /var are overlays, /opt and /boot tmpfs, systemctl a stub; the boot partition
    is a copy of what flash wrote into the image."""
    from tests.edge.diskimages import make_image, mtype

    image = tmp_path / "raspios.img"
    off = make_image(image)
    assert main(["edge", "flash", "--image", str(image), "--config",
                 str(built.parent / "bed-12" / "device.toml"), "--bundle", str(built)]) == 0
    (tmp_path / "fat").mkdir()
    subprocess.run(["mcopy", "-s", "-i", f"{image}@@{off}", "::/vigil", str(tmp_path / "fat")],
                   check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    user_data = mtype(image, off, "::/user-data")
    body = "\n".join(line for line in user_data.splitlines() if not line.startswith("#"))
    (tmp_path / "runcmd.sh").write_text("\n".join(json.loads(body)["runcmd"]) + "\n")
    (tmp_path / "check.py").write_text(CHECK)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    (stub / "systemctl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"T": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    played = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", NAMESPACE], env=env,
                            capture_output=True, text=True, check=False)
    log = (tmp_path / "runcmd.log").read_text() if (tmp_path / "runcmd.log").exists() else ""
    assert played.returncode == 0, played.stderr + log
    result = json.loads((tmp_path / "result.json").read_text())

    # config and secrets: in /etc/vigil, 0600, the vigil user's; gone from the boot partition
    assert result["etc"] == {
        name: ["0o600", "vigil"]
        for name in ("device.toml", "secret/mqtt", "ca.pem", "bed-12.key", "bed-12.pem")}
    assert result["etc_dir"] == ["0o700", "vigil"]
    assert result["password"] == "hunter2\n"
    assert not [f for f in result["fat"] if f.startswith("etc")]
    assert "manifest.json" in result["fat"]  # the rest of the bundle stays
    assert "hunter2" not in log  # nor in cloud-init's output log
    # the user, the agent, the unit
    assert result["groups"] == ["dialout", "gpio"]
    assert result["shell"] == "/usr/sbin/nologin"
    assert result["agent"] == 0
    assert "User=vigil" in result["unit"]
    assert (tmp_path / "systemctl.log").read_text().splitlines() == [
        "daemon-reload", "enable vigil-edge.service", "restart --no-block vigil-edge.service"]
