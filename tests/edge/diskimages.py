"""Disk images for the flashing tests: partition tables written byte by byte, FAT by mkfs.vfat."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

MiB = 1024 * 1024
FAT32_LBA = 0x0C
LINUX = 0x83
ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69c8477de4")


def mbr(entries: list[tuple[int, int, int]], bootable: int | None = None) -> bytes:
    """A 512-byte MBR; entries are (type, first LBA, sectors), in slots 1, 2, ..."""
    sector = bytearray(512)
    for i, (ptype, first, count) in enumerate(entries):
        entry = struct.pack(
            "<B3sB3sII", 0x80 if bootable == i + 1 else 0, b"\xfe\xff\xff", ptype,
            b"\xfe\xff\xff", first, count)
        sector[446 + 16 * i : 446 + 16 * (i + 1)] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def gpt(entries: list[tuple[uuid.UUID, int, int, str]], disk_sectors: int) -> bytes:
    """Protective MBR + GPT header + 128-entry array (34 sectors); entries: (type, first, last, name)."""
    array = bytearray(128 * 128)
    for i, (type_guid, first, last, name) in enumerate(entries):
        array[i * 128 : (i + 1) * 128] = (
            type_guid.bytes_le + uuid.uuid4().bytes_le
            + struct.pack("<QQQ", first, last, 0) + name.encode("utf-16-le").ljust(72, b"\0"))
    header = bytearray(struct.pack(
        "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, 0, 0, 1, disk_sectors - 1, 34,
        disk_sectors - 34, uuid.uuid4().bytes_le, 2, 128, 128, zlib.crc32(array)))
    header[16:20] = struct.pack("<I", zlib.crc32(header))
    protective = mbr([(0xEE, 1, min(disk_sectors - 1, 0xFFFFFFFF))])
    return protective + bytes(header).ljust(512, b"\0") + bytes(array)


def make_image(path: Path, *, size_mib: int = 64, boot_mib: int = 48, boot_type: int = FAT32_LBA,
               fat: bool = True) -> int:
    """A sparse Raspberry Pi OS-like image: partition 1 FAT32 at 1 MiB, partition 2 Linux.

    Returns the boot partition's byte offset.
    """
    first = MiB // 512
    boot_sectors = boot_mib * MiB // 512
    rest = size_mib * MiB // 512 - first - boot_sectors
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
        f.write(mbr([(boot_type, first, boot_sectors), (LINUX, first + boot_sectors, rest)]))
    if fat:
        mkfs_fat(path, offset_sectors=first, sectors=boot_sectors)
    return first * 512


def mkfs_fat(path: Path, *, offset_sectors: int, sectors: int) -> None:
    mkfs = shutil.which("mkfs.vfat") or "/usr/sbin/mkfs.vfat"
    subprocess.run(
        [mkfs, "-F", "32", "-s", "1", "-n", "BOOTFS", "--offset", str(offset_sectors), str(path),
         str(sectors * 512 // 1024)],
        check=True, capture_output=True)


def mtype(image: Path, offset: int, path: str) -> str:
    return subprocess.run(["mtype", "-i", f"{image}@@{offset}", path], check=True,
                          capture_output=True, text=True, env=_env()).stdout


def mdir(image: Path, offset: int, path: str = "::/") -> list[str]:
    """Every file (not folder) below ``path``, as "::/a/b" paths (mdir -/ -b: recursive, bare)."""
    result = subprocess.run(["mdir", "-i", f"{image}@@{offset}", "-/", "-b", path],
                            capture_output=True, text=True, env=_env(), check=False)
    if result.returncode != 0 and "not found" in result.stderr:
        return []  # mdir -b says "not found" for an empty folder too
    result.check_returncode()
    out = result.stdout
    return sorted(line for line in out.splitlines() if line.strip() and not line.endswith("/"))


def mcopy_in(image: Path, offset: int, source: Path, dest: str) -> None:
    subprocess.run(["mcopy", "-i", f"{image}@@{offset}", str(source), dest], check=True,
                   capture_output=True, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
