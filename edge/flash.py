"""`vigil edge bundle` and `vigil edge flash`: put the agent on a Raspberry Pi OS image.

``flash`` writes a bundle (see ``edge.bundle``) into the FAT boot partition of a disk
image without mounting it: the partition table is parsed here (``edge.disk``), and
mtools writes into the file system at the partition's byte offset
(``mcopy -i image@@OFFSET``). Next to the bundle it writes a cloud-init NoCloud seed
(``user-data``, ``meta-data`` and, when the image has none, ``network-config``), which
Raspberry Pi OS (Bookworm and later) reads from the boot partition at first boot; the
user-data installs the bundle (see ``edge.firstboot``). On the boot partition::

    /user-data  /meta-data  /network-config
    /vigil/     the bundle: manifest.json, SHA256SUMS, install.sh, vigil-edge.service,
                wheels/, etc/ (device.toml and its secrets, shredded at first boot)

A user-data already on the image that ``flash`` did not write (Raspberry Pi Imager's
user, SSH and Wi-Fi settings) is kept as ``user-data.orig``: cloud-init reads only one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import firstboot
from edge.bundle import (
    DEFAULT_PYTHON,
    BundleError,
    assemble_bundle,
    build_bundle,
    fetch_wheels,
    load_device_config,
    open_bundle,
)
from edge.disk import (
    SECTOR,
    DiskImageError,
    Partition,
    find_boot_partition,
    looks_like_fat,
    read_partitions,
)

__all__ = ["FlashError", "Flashed", "flash", "register"]

USER_DATA_MARK = "written by `vigil edge flash`"


class FlashError(Exception):
    """An image that could not be flashed; the message says why."""


@dataclass(frozen=True, slots=True)
class Flashed:
    image: Path
    partition: Partition
    vigil_version: str
    device: str | None
    files: tuple[str, ...]  # what is now on the boot partition, "::/..." paths
    kept_user_data: bool  # an earlier user-data was kept as user-data.orig


class Mtools:
    """mtools on one FAT file system inside an image file, at a byte offset."""

    def __init__(self, image: Path, offset: int) -> None:
        missing = [t for t in ("mcopy", "mdir", "mtype", "mdeltree") if not shutil.which(t)]
        if missing:
            raise FlashError(f"{', '.join(missing)} not found: install mtools (apt-get install mtools)")
        self.target = f"{image}@@{offset}"
        self.env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def run(self, tool: str, *args: str) -> str:
        result = subprocess.run([tool, "-i", self.target, *args], capture_output=True, text=True,
                                env=self.env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise FlashError(f"{tool} {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def exists(self, path: str) -> bool:
        result = subprocess.run(["mdir", "-i", self.target, "-b", path], capture_output=True,
                                text=True, env=self.env, stdin=subprocess.DEVNULL, check=False)
        return result.returncode == 0

    def read(self, path: str) -> bytes:
        result = subprocess.run(["mtype", "-i", self.target, path], capture_output=True,
                                env=self.env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise FlashError(f"mtype {path} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def put(self, source: Path, dest: str) -> None:
        """Copy a file, or a folder recursively, to ``dest`` (overwriting)."""
        self.run("mcopy", "-s", "-Q", "-D", "o", str(source), dest)


def flash(
    image: Path, config_path: Path, *, bundle: Path | None = None, partition: int | None = None,
    network_config: Path | None = None, source: Path | None = None,
    python_version: str = DEFAULT_PYTHON, find_links: Sequence[str] = (), no_index: bool = False,
) -> Flashed:
    """Write the bundle and the cloud-init seed for ``config_path`` into ``image``.

    With ``bundle`` (a bundle folder or .tar.gz) its wheels are used; without, they
    are built as ``vigil edge bundle`` would. Everything else comes from the config.
    """
    boot = _boot_partition(image, partition)
    if network_config is not None and not network_config.is_file():
        raise FlashError(f"network config {network_config} does not exist")
    mtools = Mtools(image, boot.offset)
    config = load_device_config(config_path)
    with tempfile.TemporaryDirectory(prefix="vigil-flash-") as tmp:
        staged = Path(tmp) / firstboot.BOOT_DIR
        if bundle is not None:
            shutil.copytree(open_bundle(bundle, Path(tmp) / "unpacked") / "wheels", staged / "wheels")
        else:
            fetch_wheels(staged / "wheels", source=source, python_version=python_version,
                         find_links=find_links, no_index=no_index)
        _, layout = assemble_bundle(staged, config, python_version=python_version)
        user_data = firstboot.render_user_data(layout)
        seed = Path(tmp) / "seed"
        seed.mkdir()
        (seed / "user-data").write_text(user_data, encoding="utf-8")
        meta_data = firstboot.render_meta_data(layout, user_data, secrets.token_hex(16))
        (seed / "meta-data").write_text(meta_data, encoding="utf-8")

        kept = False
        if mtools.exists("::/user-data"):
            previous = mtools.read("::/user-data")
            if USER_DATA_MARK.encode() not in previous:
                (seed / "user-data.orig").write_bytes(previous)
                kept = True
        if network_config is not None:
            shutil.copyfile(network_config, seed / "network-config")
        elif not mtools.exists("::/network-config"):
            (seed / "network-config").write_text(firstboot.render_network_config(), encoding="utf-8")

        if mtools.exists(f"::/{firstboot.BOOT_DIR}"):
            mtools.run("mdeltree", f"::/{firstboot.BOOT_DIR}")
        try:
            mtools.put(staged, "::/")
            # user-data last: it is what makes the device act at first boot
            for name in ("user-data.orig", "meta-data", "network-config", "user-data"):
                if (seed / name).exists():
                    mtools.put(seed / name, f"::/{name}")
        except FlashError:
            # leave no half bundle, and above all no secrets, on the partition
            if mtools.exists(f"::/{firstboot.BOOT_DIR}"):
                mtools.run("mdeltree", f"::/{firstboot.BOOT_DIR}")
            raise
        files = sorted(
            "::/" + str(p.relative_to(Path(tmp))) for p in staged.rglob("*") if p.is_file())
        files += sorted(f"::/{f.name}" for f in seed.iterdir())
    return Flashed(image=image, partition=boot, vigil_version=layout.vigil_version,
                   device=layout.device, files=tuple(files), kept_user_data=kept)


def _boot_partition(image: Path, number: int | None) -> Partition:
    boot = find_boot_partition(read_partitions(image), number)
    with open(image, "rb") as f:
        f.seek(boot.offset)
        if not looks_like_fat(f.read(SECTOR)):
            raise FlashError(
                f"partition {boot.number} of {image} (type {boot.type}) holds no FAT file "
                "system: is it formatted?")
    return boot


# --- the CLI -----------------------------------------------------------------------------


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=Path, metavar="DIR", help="the Vigil source tree to build the vigil wheel "
                   "from (default: the one this command runs from)")
    p.add_argument("--python-version", default=DEFAULT_PYTHON, metavar="X.Y",
                   help=f"the device's Python, for choosing wheels (default {DEFAULT_PYTHON}: "
                   "Raspberry Pi OS Bookworm)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR|URL",
                   help="also look for wheels here (repeatable)")
    p.add_argument("--no-index", action="store_true",
                   help="do not use the package index: only --find-links")


def register(sub: Any) -> None:
    b = sub.add_parser("bundle", help="build the agent, its wheels and a device config for "
                       "offline install", description=_first_line("edge.bundle"))
    b.add_argument("--config", type=Path, required=True, help="the device's TOML config")
    b.add_argument("--out", type=Path, required=True, metavar="DIR|FILE.tar.gz",
                   help="the bundle folder to (re)create, or a .tar.gz")
    _add_build_options(b)
    b.set_defaults(func=_bundle_command)

    f = sub.add_parser("flash", help="write the agent and a cloud-init seed into a Raspberry "
                       "Pi OS image's boot partition", description=(__doc__ or "").split("\n\n")[0])
    f.add_argument("--image", type=Path, required=True, help="the raw disk image (.img)")
    f.add_argument("--config", type=Path, required=True, help="the device's TOML config")
    f.add_argument("--bundle", type=Path, metavar="DIR|FILE.tar.gz",
                   help="use this bundle's wheels (default: build them)")
    f.add_argument("--partition", type=int, metavar="N",
                   help="write to partition N (default: the first FAT partition)")
    f.add_argument("--network-config", type=Path, metavar="FILE",
                   help="a cloud-init network-config to write (default: keep the image's, "
                   "or DHCP on eth0 when it has none)")
    _add_build_options(f)
    f.set_defaults(func=_flash_command)


def _first_line(module: str) -> str:
    doc = sys.modules[module].__doc__ or ""
    return doc.split("\n", 1)[0]


def _bundle_command(args: argparse.Namespace) -> int:
    try:
        doc = build_bundle(args.config, args.out, source=args.source,
                           python_version=args.python_version, find_links=args.find_links,
                           no_index=args.no_index)
    except BundleError as exc:
        print(f"vigil edge bundle: error: {exc}", file=sys.stderr)
        return 1
    device = f" for device {doc['device']}" if doc["device"] else ""
    print(f"bundle {args.out}: vigil {doc['vigil']}{device}")
    for wheel in doc["wheels"]:
        print(f"  {wheel['name']} {wheel['version']}")
    print("  install offline: pip install --no-index --find-links wheels/ 'vigil[edge]', "
          "or as root on the device: sh install.sh")
    print("  it holds the device's secrets (etc/): keep it private")
    return 0


def _flash_command(args: argparse.Namespace) -> int:
    try:
        done = flash(args.image, args.config, bundle=args.bundle, partition=args.partition,
                     network_config=args.network_config, source=args.source,
                     python_version=args.python_version, find_links=args.find_links,
                     no_index=args.no_index)
    except (FlashError, BundleError, DiskImageError) as exc:
        print(f"vigil edge flash: error: {exc}", file=sys.stderr)
        return 1
    p = done.partition
    device = f" for device {done.device}" if done.device else ""
    print(f"{done.image}: partition {p.number} (type {p.type}, at byte {p.offset}): "
          f"vigil {done.vigil_version}{device}, {len(done.files)} files")
    if done.kept_user_data:
        print("  the image's own user-data is kept as user-data.orig (cloud-init reads only one)")
    print(f"  at first boot cloud-init installs it and starts {firstboot.UNIT_NAME}; "
          "the config and secrets then leave the boot partition")
    return 0
