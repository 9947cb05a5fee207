"""What runs on the device at first boot: install commands, the systemd unit, cloud-init.

Pure text rendering, no I/O. One list of shell commands (``install_commands``) is
rendered two ways: as the bundle's ``install.sh`` (for a device that is already
running: copy the bundle over and run it as root) and as the ``runcmd`` of the
cloud-init ``user-data`` that ``vigil edge flash`` puts on the boot partition.

On the device (paths are fixed, see the constants below):

- a system user ``vigil`` in the ``gpio`` and ``dialout`` groups runs the agent;
- ``/etc/vigil`` (0700, vigil) holds ``device.toml`` and the files it names (TLS key,
  password file, certificates), each 0600; they are moved there from the bundle's
  ``etc/`` and then shredded off the boot partition, which is FAT and has no
  permissions: anyone who can read the SD card or mount it could read them there;
- ``/opt/vigil`` is a venv with the bundled wheels installed offline (by the bundled
  pip, so Debian's python3-venv is not needed);
- ``/var/lib/vigil`` is the agent's state directory (outbox, seq), the only place
  it may write besides the directories named by the config's ``[outbox]``;
- ``vigil-edge.service`` runs ``vigil edge run --config /etc/vigil/device.toml``.

The user-data is written as JSON, which is YAML too: no YAML library is needed to
write it, nor to check it, and no value can be misread (``no``, ``0644``, ...).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BOOT_DIR",
    "DEVICE_CONFIG",
    "DEVICE_ETC",
    "STATE_DIR",
    "UNIT_NAME",
    "USER",
    "VENV",
    "DeviceLayout",
    "install_commands",
    "render_install_script",
    "render_meta_data",
    "render_network_config",
    "render_unit",
    "render_user_data",
]

BOOT_DIR = "vigil"  # the bundle's folder on the boot partition
BOOT_MOUNTS = ("/boot/firmware", "/boot")  # Bookworm and later; before Bookworm
DEVICE_ETC = "/etc/vigil"
DEVICE_CONFIG = f"{DEVICE_ETC}/device.toml"
VENV = "/opt/vigil"
STATE_DIR = "/var/lib/vigil"
UNIT_NAME = "vigil-edge.service"
USER = "vigil"
GROUPS = ("gpio", "dialout")


@dataclass(frozen=True, slots=True)
class DeviceLayout:
    """What the install needs to know about one bundle."""

    vigil_version: str
    pip_wheel: str  # file name of the bundled pip wheel, which bootstraps the venv
    etc_files: tuple[str, ...]  # paths under the bundle's etc/ (and /etc/vigil), "/"-separated
    device: str | None = None
    writable_dirs: tuple[str, ...] = ()  # absolute directories besides STATE_DIR


def install_commands(layout: DeviceLayout, bundle: str = '"$B"') -> list[str]:
    """Shell commands (POSIX sh, as root, ``set -eu``) that install a bundle found at ``$B``.

    Order matters: the secrets leave the FAT partition before anything that may fail
    for other reasons (checksums, pip), so a failed install never leaves them there.
    """
    q = shlex.quote
    groups = ",".join(GROUPS)
    cmds = ["umask 077"]
    cmds += [f"getent group {g} >/dev/null || groupadd --system {g}" for g in GROUPS]
    cmds += [
        f"id -u {USER} >/dev/null 2>&1 || useradd --system --user-group "
        f"--home-dir {STATE_DIR} --no-create-home --shell /usr/sbin/nologin {USER}",
        f"usermod --append --groups {groups} {USER}",
        f"install -d -m 0700 -o {USER} -g {USER} {DEVICE_ETC} {STATE_DIR}",
    ]
    subdirs = sorted({f.rsplit("/", 1)[0] for f in layout.etc_files if "/" in f})
    for d in _with_parents(subdirs):
        cmds.append(f"install -d -m 0700 -o {USER} -g {USER} {q(f'{DEVICE_ETC}/{d}')}")
    for d in layout.writable_dirs:
        cmds.append(f"install -d -m 0700 -o {USER} -g {USER} {q(d)}")
    for f in layout.etc_files:
        src = f'{bundle}/etc/{q(f)}'
        cmds.append(
            f"if [ -e {src} ]; then "
            f"install -m 0600 -o {USER} -g {USER} {src} {q(f'{DEVICE_ETC}/{f}')}; "
            f"shred --remove {src} || rm -f {src}; fi")
    cmds += [
        f'rm -rf {bundle}/etc',
        "sync",
        f"(cd {bundle} && sha256sum --check --quiet --strict SHA256SUMS)",
        # --without-pip, and pip run from its bundled wheel: works without Debian's
        # python3-venv (ensurepip), and installs that pip into the venv
        f"[ -x {VENV}/bin/python ] || python3 -m venv --without-pip {VENV}",
        f"{VENV}/bin/python {bundle}/wheels/{q(layout.pip_wheel)}/pip install --no-index "
        f"--find-links {bundle}/wheels --no-cache-dir --disable-pip-version-check --upgrade "
        f"pip {q(f'vigil[edge]=={layout.vigil_version}')}",
        f"install -m 0644 {bundle}/{UNIT_NAME} /etc/systemd/system/{UNIT_NAME}",
        "systemctl daemon-reload",
        f"systemctl enable {UNIT_NAME}",
        # --no-block: cloud-init's final stage must not wait for the agent to start
        f"systemctl restart --no-block {UNIT_NAME}",
    ]
    return cmds


def _with_parents(dirs: Sequence[str]) -> list[str]:
    out: set[str] = set()
    for d in dirs:
        parts = d.split("/")
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out, key=lambda d: (d.count("/"), d))


def render_install_script(layout: DeviceLayout) -> str:
    """The bundle's ``install.sh``: run as root from anywhere, it installs its own folder."""
    lines = [
        "#!/bin/sh",
        f"# Installs the Vigil edge agent {layout.vigil_version} from this bundle, offline.",
        "# Run as root on the device: sh install.sh. Written by `vigil edge bundle`.",
        "set -eu",
        'B=$(cd "$(dirname "$0")" && pwd)',
        *install_commands(layout),
        f'echo "vigil: installed; journalctl -u {UNIT_NAME} to follow the agent"',
    ]
    return "\n".join(lines) + "\n"


def render_user_data(layout: DeviceLayout) -> str:
    """cloud-init user-data (``#cloud-config``) that installs the bundle at first boot."""
    mounts = " ".join(BOOT_MOUNTS)
    runcmd = [
        "set -eu",
        f'B=; for m in {mounts}; do if [ -f "$m/{BOOT_DIR}/manifest.json" ]; then '
        f'B="$m/{BOOT_DIR}"; break; fi; done',
        f"[ -n \"$B\" ] || {{ echo 'vigil: no {BOOT_DIR}/ on the boot partition' >&2; exit 1; }}",
        *install_commands(layout),
    ]
    config = {
        "runcmd": runcmd,
        "final_message": f"vigil: edge agent {layout.vigil_version} installed as {UNIT_NAME}",
    }
    return (
        "#cloud-config\n"
        f"# Vigil edge agent {layout.vigil_version}"
        f"{f' for device {layout.device}' if layout.device else ''}, written by `vigil edge flash`.\n"
        "# JSON is YAML: this is an ordinary cloud-config document.\n"
        + json.dumps(config, indent=2) + "\n")


def render_meta_data(layout: DeviceLayout, *flashed: str) -> str:
    """NoCloud meta-data. The instance-id is a digest of what was flashed (pass the
    user-data and a nonce: every flash is a new instance), so that a card that booted
    before runs the new user-data instead of leaving the new secrets on FAT."""
    digest = hashlib.sha256("\0".join(flashed).encode()).hexdigest()[:12]
    name = layout.device or "device"
    return f"instance-id: vigil-{name}-{digest}\n"


def render_network_config() -> str:
    """A network-config for images that have none: DHCP on the wired port, not required."""
    return (
        "# Written by `vigil edge flash`: DHCP on eth0. Replace it (or pass\n"
        "# --network-config) for Wi-Fi or static addresses.\n"
        "network:\n"
        "  version: 2\n"
        "  ethernets:\n"
        "    eth0:\n"
        "      dhcp4: true\n"
        "      optional: true\n")


def render_unit(layout: DeviceLayout) -> str:
    """The hardened systemd unit for the agent."""
    writable = " ".join([STATE_DIR, *layout.writable_dirs])
    device = f" (device {layout.device})" if layout.device else ""
    return f"""\
[Unit]
Description=Vigil edge agent{device}
Wants=network-online.target
After=network-online.target time-sync.target
# Never give up restarting: a device has nobody to restart it by hand.
StartLimitIntervalSec=0

[Service]
Type=exec
User={USER}
Group={USER}
SupplementaryGroups={" ".join(GROUPS)}
ExecStart={VENV}/bin/vigil edge run --config {DEVICE_CONFIG}
WorkingDirectory={STATE_DIR}
Restart=always
# Backoff: 2 s after the first failure, growing to 60 s (RestartSteps and
# RestartMaxDelaySec need systemd 254+; older systemd warns and keeps 2 s).
RestartSec=2s
RestartSteps=8
RestartMaxDelaySec=60s
TimeoutStopSec=20s

StateDirectory=vigil
StateDirectoryMode=0700
ReadWritePaths={writable}
UMask=0077

# Hardening. Devices are not made private: the agent needs /dev/tty* (serial),
# /dev/gpiochip* and /dev/gpiomem (GPIO) and /dev/spidev* (the MCP3008 ADC).
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
RemoveIPC=yes
PrivateMounts=yes
# /proc: other processes hidden; not ProcSubset=pid, gpiozero reads /proc/device-tree.
ProtectProc=invisible

[Install]
WantedBy=multi-user.target
"""
