"""`vigil edge bundle`: the agent, its wheels and one device's config, ready to install offline.

A bundle is a folder (or a .tar.gz of one folder, ``vigil-bundle/``)::

    manifest.json     versions, the wheels, sha256 of every file but the secrets
    SHA256SUMS        the same sums, for ``sha256sum --check`` on the device
    install.sh        run as root on the device; the cloud-init user-data runs the same
    vigil-edge.service  the hardened systemd unit
    wheels/           vigil, its edge dependencies and pip: pure-Python wheels only
    etc/              device.toml and the files it names; these go to /etc/vigil

It installs with ``pip install --no-index --find-links wheels/ 'vigil[edge]'``.

The device config (its format: ``edge.config``) is validated with
``edge.config.load_config`` and copied as it is. Only these keys are read here, all
optional, to find what the device needs besides the config itself:

- ``[mqtt] password_file`` and ``[mqtt.tls] key``: secrets;
- ``[mqtt.tls] cert`` and ``ca``: certificates;
- ``[outbox] path``: when absolute and outside /var/lib/vigil (the agent's state
  folder, always writable), its folder is made writable for the agent;
- ``[device] id``: a label.

A relative path is relative to the config file (as ``edge.config`` reads it), here and
on the device, where the config is /etc/vigil/device.toml: each file keeps its place
next to the config. An absolute path is refused for these files (it could not mean the
same file on both machines), and a relative ``[outbox] path`` is refused too (/etc/vigil
is read-only for the agent). An inline ``[mqtt] password`` needs nothing: the config
file itself is always treated as a secret. All of etc/ is treated alike: 0600 on the
device, shredded off the boot partition at first boot, listed in the manifest's
``config_files`` without a sum (the sum of a short password file would give it away).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from edge import firstboot
from edge.wire import WireError, check_device_id

__all__ = [
    "DEFAULT_PYTHON",
    "BundleError",
    "ConfigFile",
    "DeviceConfig",
    "assemble_bundle",
    "build_bundle",
    "fetch_wheels",
    "inspect_config",
    "load_device_config",
    "manifest",
    "open_bundle",
]

log = logging.getLogger("vigil.edge")

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
INSTALL = "install.sh"
CONFIG_NAME = "device.toml"
TAR_ROOT = "vigil-bundle"
DEFAULT_PYTHON = "3.11"  # Raspberry Pi OS Bookworm's python3

_SECRET_KEYS = (("mqtt", "password_file"), ("mqtt.tls", "key"))
_PUBLIC_KEYS = (("mqtt.tls", "cert"), ("mqtt.tls", "ca"))


class BundleError(Exception):
    """A bundle that cannot be built; the message says why."""


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A file the device config names, to be shipped next to it."""

    key: str  # where the config names it, e.g. "mqtt.tls.key"
    path: PurePosixPath  # relative to the config, on both machines
    secret: bool


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    source: Path  # the TOML file on this machine
    device: str | None
    files: tuple[ConfigFile, ...] = ()
    writable_dirs: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())  # why the config cannot be shipped


def _table(doc: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    node: Any = doc
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def inspect_config(doc: Mapping[str, Any], source: Path) -> DeviceConfig:
    """What a parsed device config needs shipped with it (pure: no file is read)."""
    files: list[ConfigFile] = []
    problems: list[str] = []
    for keys, secret in ((_SECRET_KEYS, True), (_PUBLIC_KEYS, False)):
        for table, key in keys:
            value = _table(doc, table).get(key)
            name = f"{table}.{key}"
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                problems.append(f"{name} must be a file path, got {value!r}")
                continue
            if "-----BEGIN" in value:
                continue  # inline PEM: it travels inside the config
            path = PurePosixPath(value)
            if path.is_absolute():
                problems.append(
                    f"{name} = {value!r} is absolute: give a path relative to the config "
                    f"file so that it means the same on the device ({firstboot.DEVICE_ETC})")
            elif ".." in path.parts or path == PurePosixPath(".") or str(path) == CONFIG_NAME:
                problems.append(f"{name} = {value!r} must name a file beside or below the config")
            elif all(f.path != path for f in files):
                files.append(ConfigFile(key=name, path=path, secret=secret))
    writable: list[str] = []
    outbox = _table(doc, "outbox").get("path")
    if isinstance(outbox, str) and outbox.startswith("/"):
        folder = str(PurePosixPath(outbox).parent)
        if folder != firstboot.STATE_DIR and not folder.startswith(firstboot.STATE_DIR + "/"):
            writable.append(folder)
    elif isinstance(outbox, str):
        problems.append(
            f"outbox.path = {outbox!r} is relative to the config, which on the device is in "
            f"{firstboot.DEVICE_ETC}, where the agent may not write: give an absolute path "
            f"(e.g. {firstboot.STATE_DIR}/outbox.sqlite) or leave it out")
    return DeviceConfig(source=source, device=_device_id(doc), files=tuple(files),
                        writable_dirs=tuple(writable), problems=tuple(problems))


def _device_id(doc: Mapping[str, Any]) -> str | None:
    value = _table(doc, "device").get("id")
    try:
        return check_device_id(value) if isinstance(value, str) else None
    except WireError:
        return None


def load_device_config(path: Path) -> DeviceConfig:
    """Read and inspect a device config; ``BundleError`` if it cannot be shipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"device config {path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise BundleError(f"device config {path} is not a TOML file: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"device config {path} is not valid TOML: {exc}") from None
    config = inspect_config(doc, path)
    problems = list(config.problems)
    problems += _validate(path)
    for f in config.files:
        if not (path.parent / f.path).is_file():
            problems.append(f"{f.key} names {path.parent / f.path}, which is not a file")
    if problems:
        raise BundleError(f"device config {path}: " + "; ".join(problems))
    return config


def _validate(path: Path) -> list[str]:
    """The agent's own verdict on the config (``edge.config``), so a bad config is refused
    here rather than found by a device in a restart loop."""
    try:
        from edge.config import ConfigError, load_config
    except ImportError:  # an older tree without edge.config: ship it unvalidated
        return []
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        return list(exc.errors)
    return []


# --- the bundle's files -----------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_name_version(filename: str) -> tuple[str, str]:
    """``paho_mqtt-2.2.0-py3-none-any.whl`` -> ("paho-mqtt", "2.2.0")."""
    parts = filename[: -len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise BundleError(f"{filename} is not a wheel file name")
    return parts[0].replace("_", "-").lower(), parts[1]


def manifest(
    sums: Mapping[str, str], config_files: Iterable[str], *, device: str | None,
    python_version: str, created: datetime,
) -> dict[str, Any]:
    """The manifest (pure): ``sums`` maps bundle paths ("wheels/x.whl") to sha256."""
    wheels = []
    vigil_version = None
    for path in sorted(sums):
        if path.startswith("wheels/"):
            name, version = wheel_name_version(path.rsplit("/", 1)[1])
            wheels.append({"name": name, "version": version, "file": path})
            if name == "vigil":
                vigil_version = version
    if vigil_version is None:
        raise BundleError("the bundle has no vigil wheel")
    return {
        "format": 1,
        "vigil": vigil_version,
        "device": device,
        "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": python_version,
        "install": f"pip install --no-index --find-links wheels/ 'vigil[edge]=={vigil_version}'",
        "wheels": wheels,
        "files": dict(sorted(sums.items())),
        # device.toml and the files it names: no sums (the sum of a short password file
        # gives it away); they leave the boot partition at first boot.
        "config_files": sorted(config_files),
    }


def assemble_bundle(
    bundle: Path, config: DeviceConfig, *, python_version: str = DEFAULT_PYTHON,
    created: datetime | None = None,
) -> tuple[dict[str, Any], firstboot.DeviceLayout]:
    """Write etc/, the unit, install.sh, SHA256SUMS and manifest.json around ``bundle/wheels``.

    Returns the manifest and the layout the device install follows. Anything the
    folder held besides wheels/ is replaced.
    """
    wheels = bundle / "wheels"
    impure = sorted(p.name for p in wheels.glob("*.whl") if not p.name.endswith("-none-any.whl"))
    if impure:
        raise BundleError(f"not pure-Python wheels (a device cannot use them): {', '.join(impure)}")
    etc = bundle / "etc"
    if etc.exists():
        shutil.rmtree(etc)
    etc_files = [CONFIG_NAME, *(str(f.path) for f in config.files)]
    for rel in etc_files:
        source = config.source if rel == CONFIG_NAME else config.source.parent / rel
        _copy_private(source, etc / rel)
    wheel_files = sorted(wheels.glob("*.whl"))
    sums = {f"wheels/{p.name}": sha256_file(p) for p in wheel_files}
    by_name = {wheel_name_version(p.name)[0]: p.name for p in wheel_files}
    for needed in ("vigil", "pip"):
        if needed not in by_name:
            raise BundleError(f"no {needed} wheel in {wheels}")
    layout = firstboot.DeviceLayout(
        vigil_version=wheel_name_version(by_name["vigil"])[1], pip_wheel=by_name["pip"],
        etc_files=tuple(etc_files), device=config.device, writable_dirs=config.writable_dirs)
    texts = {
        INSTALL: firstboot.render_install_script(layout),
        firstboot.UNIT_NAME: firstboot.render_unit(layout),
    }
    for name, text in texts.items():
        (bundle / name).write_text(text, encoding="utf-8")
        sums[name] = hashlib.sha256(text.encode()).hexdigest()
    (bundle / INSTALL).chmod(0o755)
    doc = manifest(sums, (f"etc/{f}" for f in etc_files), device=config.device,
                   python_version=python_version, created=created or datetime.now(UTC))
    manifest_text = json.dumps(doc, indent=2) + "\n"
    (bundle / MANIFEST).write_text(manifest_text, encoding="utf-8")
    sums[MANIFEST] = hashlib.sha256(manifest_text.encode()).hexdigest()
    (bundle / SUMS).write_text(
        "".join(f"{digest}  {path}\n" for path, digest in sorted(sums.items())), encoding="utf-8")
    return doc, layout


def _copy_private(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)


# --- the shell: pip ----------------------------------------------------------------------


def source_tree() -> Path | None:
    """The Vigil source checkout this code runs from, if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def edge_requirements(source: Path) -> list[str]:
    """The ``edge`` extra of the project, as pyproject.toml declares it."""
    doc = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    extras = doc.get("project", {}).get("optional-dependencies", {})
    if "edge" not in extras:
        raise BundleError(f"{source / 'pyproject.toml'} declares no 'edge' extra")
    return list(extras["edge"])


def _pip(args: Sequence[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    log.info("%s: %s", what, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BundleError(f"{what} failed (pip exit {result.returncode}):\n{tail}")


def build_vigil_wheel(source: Path, dest: Path) -> None:
    """``pip wheel --no-deps`` of a clean copy of the source (no stale build/ leftovers)."""
    with tempfile.TemporaryDirectory(prefix="vigil-src-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "var", "*.egg-info", "__pycache__", "tests"))
        _pip(["wheel", "--no-deps", "--wheel-dir", str(dest), str(copy)], "building the vigil wheel")


def download_wheels(
    dest: Path, requirements: Sequence[str], *, python_version: str,
    find_links: Sequence[str] = (), no_index: bool = False,
) -> None:
    """Pure-Python wheels of ``requirements`` and their dependencies, for any platform."""
    args = ["download", "--only-binary=:all:", "--platform", "any", "--implementation", "py",
            "--abi", "none", "--python-version", python_version, "--dest", str(dest)]
    for link in find_links:
        args += ["--find-links", link]
    if no_index:
        args.append("--no-index")
    _pip([*args, *requirements], "downloading the edge dependencies")


def fetch_wheels(
    dest: Path, *, source: Path | None = None, python_version: str = DEFAULT_PYTHON,
    find_links: Sequence[str] = (), no_index: bool = False,
) -> None:
    """The vigil wheel built from ``source`` and the wheels of its edge extra, into ``dest``."""
    source = source or source_tree()
    if source is None or not (source / "pyproject.toml").is_file():
        raise BundleError("building the vigil wheel needs the Vigil source tree: pass --source DIR")
    dest.mkdir(parents=True, exist_ok=True)
    build_vigil_wheel(source, dest)
    # pip too: the device bootstraps its venv with it (see edge.firstboot)
    download_wheels(dest, [*edge_requirements(source), "pip"], python_version=python_version,
                    find_links=find_links, no_index=no_index)


def build_bundle(
    config_path: Path, out: Path, *, source: Path | None = None,
    python_version: str = DEFAULT_PYTHON, find_links: Sequence[str] = (), no_index: bool = False,
) -> dict[str, Any]:
    """Build a bundle into folder ``out`` (made anew), or ``out`` = FILE.tar.gz. Returns the manifest."""
    config = load_device_config(config_path)
    tarball = out.name.endswith((".tar.gz", ".tgz"))
    if not tarball and out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BundleError(f"{out} exists and is not a bundle: refusing to overwrite it")
    with tempfile.TemporaryDirectory(prefix="vigil-bundle-") as tmp:
        bundle = Path(tmp) / TAR_ROOT
        fetch_wheels(bundle / "wheels", source=source, python_version=python_version,
                     find_links=find_links, no_index=no_index)
        doc, _ = assemble_bundle(bundle, config, python_version=python_version)
        if tarball:
            write_tarball(bundle, out)
        else:
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(bundle, out)
            out.chmod(0o700)
    log.info("bundle %s written; it holds the device's secrets (etc/)", out)
    return doc


def write_tarball(bundle: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when it was there before, readable
    with open(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(bundle, arcname=TAR_ROOT)


def open_bundle(path: Path, workdir: Path) -> Path:
    """A bundle folder from a bundle folder or .tar.gz (unpacked into ``workdir``)."""
    if path.is_dir():
        root = path
    elif path.is_file():
        try:
            with tarfile.open(path) as tar:
                tar.extractall(workdir, filter="data")
        except tarfile.TarError as exc:
            raise BundleError(f"{path} is not a bundle tarball: {exc}") from None
        root = workdir / TAR_ROOT
    else:
        raise BundleError(f"bundle {path} does not exist")
    if not (root / MANIFEST).is_file() or not (root / "wheels").is_dir():
        raise BundleError(f"{path} is not a bundle (no {MANIFEST} and wheels/)")
    return root
