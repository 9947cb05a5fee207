"""`vigil edge flash`: a disk image is built here, flashed, and read back with mtools.

The bundle's wheels are stand-ins here (flashing copies them, it does not open them);
tests/edge/test_bundle.py builds the real ones and installs them offline.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.cli import main
from edge.bundle import assemble_bundle, load_device_config
from tests.edge.diskimages import (
    ESP,
    LINUX,
    LINUX_FS,
    MiB,
    gpt,
    make_image,
    mcopy_in,
    mdir,
    mkfs_fat,
    mtype,
)

pytestmark = pytest.mark.skipif(
    not shutil.which("mcopy") or not (shutil.which("mkfs.vfat") or Path("/usr/sbin/mkfs.vfat").exists()),
    reason="needs mtools and dosfstools (installed by .ci/run)")

PASSWORD = "correct horse battery staple"
KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPretendThisIsAnEd25519Key\n-----END PRIVATE KEY-----\n"

DEVICE_TOML = """\
[device]
id = "truck-7"
kind = "vehicle"

[mqtt]
host = "gateway.example"
username = "truck-7"
password_file = "mqtt-password"

[mqtt.tls]
ca = "certs/ca.pem"
cert = "certs/truck-7.pem"
key = "certs/truck-7.key"

[outbox]
path = "/var/lib/vigil/outbox.sqlite"
"""


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    d = tmp_path / "truck-7"
    (d / "certs").mkdir(parents=True)
    (d / "device.toml").write_text(DEVICE_TOML)
    (d / "mqtt-password").write_text(PASSWORD + "\n")
    (d / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
    (d / "certs" / "truck-7.pem").write_text("-----BEGIN CERTIFICATE-----\nT7\n-----END CERTIFICATE-----\n")
    (d / "certs" / "truck-7.key").write_text(KEY)
    return d


@pytest.fixture
def bundle(tmp_path: Path, device_dir: Path) -> Path:
    """A bundle folder whose wheels are stand-ins."""
    b = tmp_path / "bundle"
    (b / "wheels").mkdir(parents=True)
    (b / "wheels" / "vigil-0.1.0-py3-none-any.whl").write_bytes(b"vigil wheel stand-in " * 100)
    (b / "wheels" / "paho_mqtt-2.2.0-py3-none-any.whl").write_bytes(b"paho stand-in")
    (b / "wheels" / "pip-26.0-py3-none-any.whl").write_bytes(b"pip stand-in")
    assemble_bundle(b, load_device_config(device_dir / "device.toml"))
    return b


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "raspios.img"
    return path, make_image(path)


def vigil(*argv: str) -> int:
    return main(list(argv))


def runcmd(user_data: str) -> list[str]:
    assert user_data.startswith("#cloud-config\n")
    body = "\n".join(line for line in user_data.splitlines() if not line.startswith("#"))
    doc = json.loads(body)  # JSON is YAML: a cloud-config document
    assert set(doc) <= {"runcmd", "final_message"}
    return list(doc["runcmd"])


def flash_ok(image: Path, config: Path, bundle: Path, *extra: str) -> None:
    assert vigil("edge", "flash", "--image", str(image), "--config", str(config),
                 "--bundle", str(bundle), *extra) == 0


def test_flash_writes_the_bundle_and_the_cloud_init_seed(
    image: tuple[Path, int], device_dir: Path, bundle: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    img, off = image
    flash_ok(img, device_dir / "device.toml", bundle)
    out = capsys.readouterr().out
    assert f"partition 1 (type 0x0c, at byte {off})" in out
    assert "vigil 0.1.0 for device truck-7" in out

    files = mdir(img, off)
    assert {"::/user-data", "::/meta-data", "::/network-config"} <= set(files)
    for name in ("manifest.json", "SHA256SUMS", "install.sh", "vigil-edge.service",
                 "wheels/vigil-0.1.0-py3-none-any.whl", "wheels/paho_mqtt-2.2.0-py3-none-any.whl",
                 "etc/device.toml", "etc/mqtt-password", "etc/certs/truck-7.key",
                 "etc/certs/truck-7.pem", "etc/certs/ca.pem"):
        assert f"::/vigil/{name}" in files

    # every summed file reads back byte for byte
    manifest = json.loads(mtype(img, off, "::/vigil/manifest.json"))
    for path, digest in manifest["files"].items():
        local = img.parent / "readback"
        local.unlink(missing_ok=True)
        subprocess.run(["mcopy", "-i", f"{img}@@{off}", f"::/vigil/{path}", str(local)],
                       check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
        assert hashlib.sha256(local.read_bytes()).hexdigest() == digest, path
    sums = mtype(img, off, "::/vigil/SHA256SUMS")
    assert re.search(r"^[0-9a-f]{64}  wheels/vigil-0\.1\.0-py3-none-any\.whl$", sums, re.M)
    assert "etc/" not in sums  # no sums of secrets on the FAT partition

    # the config and secrets are there for first boot, as they were written
    assert mtype(img, off, "::/vigil/etc/device.toml") == DEVICE_TOML
    assert mtype(img, off, "::/vigil/etc/mqtt-password") == PASSWORD + "\n"
    assert mtype(img, off, "::/vigil/etc/certs/truck-7.key") == KEY

    assert mtype(img, off, "::/meta-data").startswith("instance-id: vigil-truck-7-")
    assert "dhcp4: true" in mtype(img, off, "::/network-config")


def test_user_data_moves_the_secrets_to_etc_vigil_and_removes_them_from_fat(
    image: tuple[Path, int], device_dir: Path, bundle: Path,
) -> None:
    img, off = image
    flash_ok(img, device_dir / "device.toml", bundle)
    cmds = runcmd(mtype(img, off, "::/user-data"))
    script = "\n".join(cmds)

    assert cmds[0] == "set -eu"
    assert "/boot/firmware /boot" in cmds[1]  # finds the boot partition, Bookworm or older
    assert re.search(r"useradd --system .*vigil", script)
    assert "usermod --append --groups gpio,dialout vigil" in script
    assert "install -d -m 0700 -o vigil -g vigil /etc/vigil" in script

    on_fat = [p.removeprefix("::/vigil/") for p in mdir(img, off, "::/vigil/etc")]
    assert sorted(on_fat) == ["etc/certs/ca.pem", "etc/certs/truck-7.key", "etc/certs/truck-7.pem",
                              "etc/device.toml", "etc/mqtt-password"]
    pip_at = next(i for i, c in enumerate(cmds) if "pip install" in c)
    for path in on_fat:
        rel = path.removeprefix("etc/")
        moved = f'install -m 0600 -o vigil -g vigil "$B"/{path} /etc/vigil/{rel}'
        shredded = f'shred --remove "$B"/{path}'
        (i,) = [i for i, c in enumerate(cmds) if moved in c and shredded in c]
        assert i < pip_at  # gone from the FAT partition before anything else can fail
    assert cmds.index('rm -rf "$B"/etc') < pip_at

    pip = cmds[pip_at]
    assert pip.startswith('/opt/vigil/bin/python "$B"/wheels/pip-26.0-py3-none-any.whl/pip install '
                          '--no-index --find-links "$B"/wheels')
    assert pip.endswith("pip 'vigil[edge]==0.1.0'")
    assert "python3 -m venv --without-pip /opt/vigil" in script
    assert "sha256sum --check" in script
    assert "systemctl enable vigil-edge.service" in script
    assert script.index("systemctl enable") > pip_at

    # the shell can parse what cloud-init will run, and install.sh too
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    subprocess.run(["sh", "-n"], input=mtype(img, off, "::/vigil/install.sh"), text=True, check=True)


def test_the_systemd_unit_is_hardened(image: tuple[Path, int], device_dir: Path, bundle: Path) -> None:
    img, off = image
    flash_ok(img, device_dir / "device.toml", bundle)
    unit = mtype(img, off, "::/vigil/vigil-edge.service").splitlines()
    for line in (
        "User=vigil",
        "SupplementaryGroups=gpio dialout",
        "ExecStart=/opt/vigil/bin/vigil edge run --config /etc/vigil/device.toml",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/vigil",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Restart=always",
        "RestartSec=2s",
        "RestartSteps=8",
        "RestartMaxDelaySec=60s",
        "StartLimitIntervalSec=0",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "WantedBy=multi-user.target",
    ):
        assert line in unit


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_accepts_the_unit_and_rates_it_well_sandboxed(bundle: Path, tmp_path: Path) -> None:
    unit = tmp_path / "vigil-edge.service"
    shutil.copyfile(bundle / "vigil-edge.service", unit)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            check=False)
    complaints = [line for line in verify.stderr.splitlines() if line.strip() and not (
        "/opt/vigil/bin/vigil is not executable" in line  # not installed here
        or re.search(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'", line))]  # systemd < 254
    assert complaints == []
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, check=False)
    level = re.search(r"Overall exposure level for vigil-edge.service: ([0-9.]+)", security.stdout)
    if level is None:
        pytest.skip("this systemd-analyze cannot rate a unit file offline")
    assert float(level.group(1)) <= 2.5  # systemd's scale: 0 safest, 10 unprotected


def test_an_outbox_outside_the_state_folder_is_made_writable(
    image: tuple[Path, int], device_dir: Path, bundle: Path,
) -> None:
    img, off = image
    config = device_dir / "device.toml"
    config.write_text(DEVICE_TOML.replace("/var/lib/vigil/outbox.sqlite", "/data/vigil/outbox.sqlite"))
    flash_ok(img, config, bundle)
    unit = mtype(img, off, "::/vigil/vigil-edge.service")
    assert "ReadWritePaths=/var/lib/vigil /data/vigil\n" in unit
    assert "install -d -m 0700 -o vigil -g vigil /data/vigil" in runcmd(mtype(img, off, "::/user-data"))


def test_reflashing_replaces_the_bundle_and_leaves_no_stale_secret(
    image: tuple[Path, int], device_dir: Path, bundle: Path,
) -> None:
    img, off = image
    flash_ok(img, device_dir / "device.toml", bundle)
    first_instance = mtype(img, off, "::/meta-data")
    config = device_dir / "device.toml"
    config.write_text(DEVICE_TOML.replace('password_file = "mqtt-password"', 'password = "inline"'))
    flash_ok(img, config, bundle)
    files = mdir(img, off, "::/vigil/etc")
    assert "::/vigil/etc/mqtt-password" not in files
    assert 'password = "inline"' in mtype(img, off, "::/vigil/etc/device.toml")
    assert "mqtt-password" not in mtype(img, off, "::/user-data")
    assert mtype(img, off, "::/meta-data") != first_instance  # cloud-init runs the new user-data
    assert "::/user-data.orig" not in mdir(img, off)  # our own user-data is not kept


def test_every_flash_is_a_new_cloud_init_instance(
    image: tuple[Path, int], device_dir: Path, bundle: Path,
) -> None:
    """A card that booted before must run the new user-data (and take the new secrets off FAT)."""
    img, off = image
    flash_ok(img, device_dir / "device.toml", bundle)
    first = mtype(img, off, "::/meta-data")
    flash_ok(img, device_dir / "device.toml", bundle)
    assert mtype(img, off, "::/meta-data") != first


def test_the_images_own_user_data_and_network_config_are_kept(
    image: tuple[Path, int], device_dir: Path, bundle: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    img, off = image
    imager = img.parent / "user-data"
    imager.write_text("#cloud-config\nusers:\n- name: pi\n")
    wifi = img.parent / "network-config"
    wifi.write_text("network:\n  version: 2\n  wifis: {}\n")
    mcopy_in(img, off, imager, "::/user-data")
    mcopy_in(img, off, wifi, "::/network-config")
    flash_ok(img, device_dir / "device.toml", bundle)
    assert mtype(img, off, "::/user-data.orig") == imager.read_text()
    assert mtype(img, off, "::/network-config") == wifi.read_text()
    assert "kept as user-data.orig" in capsys.readouterr().out
    runcmd(mtype(img, off, "::/user-data"))


def test_network_config_option(image: tuple[Path, int], device_dir: Path, bundle: Path) -> None:
    img, off = image
    net = img.parent / "net.yaml"
    net.write_text("network:\n  version: 2\n  ethernets: {eth0: {addresses: [10.0.0.7/24]}}\n")
    flash_ok(img, device_dir / "device.toml", bundle, "--network-config", str(net))
    assert mtype(img, off, "::/network-config") == net.read_text()


def test_flash_a_bundle_tarball(
    image: tuple[Path, int], device_dir: Path, bundle: Path, tmp_path: Path,
) -> None:
    from edge.bundle import write_tarball

    img, off = image
    write_tarball(bundle, tmp_path / "b.tar.gz")
    flash_ok(img, device_dir / "device.toml", tmp_path / "b.tar.gz")
    assert "::/vigil/wheels/vigil-0.1.0-py3-none-any.whl" in mdir(img, off)


def test_flash_a_gpt_image(tmp_path: Path, device_dir: Path, bundle: Path) -> None:
    img = tmp_path / "gpt.img"
    sectors = 64 * MiB // 512
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
        f.write(gpt([(ESP, 2048, 100351, "EFI"), (LINUX_FS, 100352, sectors - 34, "root")], sectors))
    mkfs_fat(img, offset_sectors=2048, sectors=100352 - 2048)
    flash_ok(img, device_dir / "device.toml", bundle)
    assert "::/vigil/etc/device.toml" in mdir(img, 2048 * 512)


# --- errors a user gets ------------------------------------------------------------------


def flash_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert vigil("edge", "flash", *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vigil edge flash: error: ")
    return err


def test_a_missing_image(tmp_path: Path, device_dir: Path, bundle: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    err = flash_error(capsys, "--image", str(tmp_path / "raspios.img"),
                      "--config", str(device_dir / "device.toml"), "--bundle", str(bundle))
    assert "raspios.img does not exist" in err


def test_an_image_without_a_fat_partition(tmp_path: Path, device_dir: Path, bundle: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "linux.img"
    make_image(img, boot_type=LINUX, fat=False)
    err = flash_error(capsys, "--image", str(img), "--config", str(device_dir / "device.toml"),
                      "--bundle", str(bundle))
    assert "no FAT boot partition" in err
    assert "1: type 0x83" in err


def test_an_unformatted_fat_partition(tmp_path: Path, device_dir: Path, bundle: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "blank.img"
    make_image(img, fat=False)
    err = flash_error(capsys, "--image", str(img), "--config", str(device_dir / "device.toml"),
                      "--bundle", str(bundle))
    assert "partition 1" in err and "holds no FAT file system" in err


def test_a_full_boot_partition(tmp_path: Path, device_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = tmp_path / "big-bundle"
    (b / "wheels").mkdir(parents=True)
    with open(b / "wheels" / "vigil-0.1.0-py3-none-any.whl", "wb") as f:
        f.write(bytes(40 * MiB))  # more than the 34 MiB partition holds
    (b / "wheels" / "pip-26.0-py3-none-any.whl").write_bytes(b"pip stand-in")
    assemble_bundle(b, load_device_config(device_dir / "device.toml"))
    img = tmp_path / "small.img"
    off = make_image(img, size_mib=64, boot_mib=34)
    err = flash_error(capsys, "--image", str(img), "--config", str(device_dir / "device.toml"),
                      "--bundle", str(b))
    assert "mcopy" in err
    assert mdir(img, off) == []  # no half bundle, no secrets, no seed left behind


def test_a_config_naming_a_missing_key_file(image: tuple[Path, int], device_dir: Path, bundle: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    img, off = image
    (device_dir / "certs" / "truck-7.key").unlink()
    err = flash_error(capsys, "--image", str(img), "--config", str(device_dir / "device.toml"),
                      "--bundle", str(bundle))
    assert "mqtt.tls.key" in err
    assert not [p for p in mdir(img, off) if p.startswith("::/vigil")]  # nothing written
