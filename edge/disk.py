"""Disk images: partition tables (MBR and GPT) read from bytes, no mounting.

A pure core: ``parse_mbr`` and ``parse_gpt`` take the bytes of the table and return
``Partition``s with byte offsets; ``find_boot_partition`` picks the FAT partition an
image boots from. ``read_partitions`` is the thin shell that reads those bytes from an
image file.

Raspberry Pi OS images use an MBR: partition 1 is the FAT32 boot partition (type
0x0c), partition 2 the ext4 root. Extended partitions (0x05, 0x0f) are listed but their
logical partitions are not followed: a boot partition is always a primary one.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DiskImageError",
    "Partition",
    "PartitionTableError",
    "find_boot_partition",
    "looks_like_fat",
    "parse_gpt",
    "parse_gpt_header",
    "parse_mbr",
    "read_partitions",
]

SECTOR = 512
MBR_SIGNATURE = b"\x55\xaa"
GPT_SIGNATURE = b"EFI PART"
GPT_PROTECTIVE = 0xEE

# MBR partition types that hold a FAT file system.
MBR_FAT_TYPES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x06: "FAT16",
    0x0B: "FAT32 (CHS)",
    0x0C: "FAT32 (LBA)",
    0x0E: "FAT16 (LBA)",
}
MBR_EXTENDED_TYPES = {0x05, 0x0F, 0x85}
# GPT partition type GUIDs that hold a FAT file system.
GPT_FAT_TYPES = {
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"): "EFI system",
    uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"): "Microsoft basic data",
}


class DiskImageError(Exception):
    """An image that cannot be flashed; the message says why and what to do."""


class PartitionTableError(DiskImageError):
    """Bytes that are not a valid partition table."""


@dataclass(frozen=True, slots=True)
class Partition:
    number: int  # 1-based, as Linux names them (sda1, mmcblk0p1)
    type: str  # MBR: "0x0c"; GPT: the type GUID
    offset: int  # bytes from the start of the image
    size: int  # bytes
    fat: bool  # the type says FAT
    bootable: bool = False  # MBR active flag; GPT legacy BIOS bootable attribute
    label: str = ""  # GPT partition name, or a description of the MBR type

    @property
    def end(self) -> int:
        return self.offset + self.size


def parse_mbr(sector0: bytes, sector_size: int = SECTOR) -> list[Partition]:
    """The four primary entries of an MBR (empty entries left out).

    Raises ``PartitionTableError`` when the sector has no 0x55AA signature. A GPT
    disk's protective MBR parses as one partition of type 0xee.
    """
    if len(sector0) < SECTOR:
        raise PartitionTableError(f"an MBR is {SECTOR} bytes, got {len(sector0)}")
    if sector0[510:512] != MBR_SIGNATURE:
        raise PartitionTableError("no partition table: the first sector lacks the 0x55AA signature")
    partitions = []
    for i in range(4):
        entry = sector0[446 + 16 * i : 446 + 16 * (i + 1)]
        status, ptype = entry[0], entry[4]
        first_lba, sectors = struct.unpack_from("<II", entry, 8)
        if ptype == 0 or sectors == 0:
            continue
        if status not in (0x00, 0x80):
            raise PartitionTableError(
                f"MBR entry {i + 1} has status byte {status:#04x}: not a partition table")
        label = MBR_FAT_TYPES.get(ptype, "extended" if ptype in MBR_EXTENDED_TYPES else "")
        partitions.append(Partition(
            number=i + 1, type=f"{ptype:#04x}", offset=first_lba * sector_size,
            size=sectors * sector_size, fat=ptype in MBR_FAT_TYPES,
            bootable=status == 0x80, label=label))
    return partitions


@dataclass(frozen=True, slots=True)
class GptHeader:
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int


def parse_gpt_header(sector1: bytes) -> GptHeader:
    """The GPT header at LBA 1, its CRC checked."""
    if sector1[:8] != GPT_SIGNATURE:
        raise PartitionTableError("protective MBR but no 'EFI PART' GPT header at LBA 1")
    header_size = struct.unpack_from("<I", sector1, 12)[0]
    if not 92 <= header_size <= len(sector1):
        raise PartitionTableError(f"GPT header size {header_size} is invalid")
    stored_crc = struct.unpack_from("<I", sector1, 16)[0]
    zeroed = sector1[:16] + b"\0\0\0\0" + sector1[20:header_size]
    if zlib.crc32(zeroed) != stored_crc:
        raise PartitionTableError("GPT header CRC mismatch: the header is corrupt")
    entries_lba, count, size, crc = struct.unpack_from("<QIII", sector1, 72)
    if size < 128 or count > 4096:
        raise PartitionTableError(f"GPT declares {count} entries of {size} bytes: invalid")
    return GptHeader(entries_lba=entries_lba, entry_count=count, entry_size=size, entries_crc=crc)


def parse_gpt(header: GptHeader, entries: bytes, sector_size: int = SECTOR) -> list[Partition]:
    """The used entries of a GPT partition array (``header`` from ``parse_gpt_header``)."""
    length = header.entry_count * header.entry_size
    if len(entries) < length:
        raise PartitionTableError(f"GPT entry array is {length} bytes, got {len(entries)}")
    if zlib.crc32(entries[:length]) != header.entries_crc:
        raise PartitionTableError("GPT entry array CRC mismatch: the table is corrupt")
    partitions = []
    for i in range(header.entry_count):
        entry = entries[i * header.entry_size : (i + 1) * header.entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last, attributes = struct.unpack_from("<QQQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        partitions.append(Partition(
            number=i + 1, type=str(type_guid), offset=first * sector_size,
            size=(last - first + 1) * sector_size, fat=type_guid in GPT_FAT_TYPES,
            bootable=bool(attributes & 0b100), label=name or GPT_FAT_TYPES.get(type_guid, "")))
    return partitions


def find_boot_partition(partitions: list[Partition], number: int | None = None) -> Partition:
    """The partition to write to: ``number`` if given, else the first FAT partition.

    Raises ``DiskImageError`` naming what the image has when nothing fits.
    """
    if number is not None:
        for p in partitions:
            if p.number == number:
                return p
        raise DiskImageError(
            f"the image has no partition {number}; it has {_describe(partitions)}")
    for p in partitions:
        if p.fat:
            return p
    raise DiskImageError(
        f"the image has no FAT boot partition (MBR type 0x0b, 0x0c or 0x0e, or a GPT EFI "
        f"system/basic data partition); it has {_describe(partitions)}")


def looks_like_fat(boot_sector: bytes) -> bool:
    """Whether a partition's first sector is a FAT boot sector (not just typed FAT)."""
    if len(boot_sector) < SECTOR or boot_sector[510:512] != MBR_SIGNATURE:
        return False
    bytes_per_sector = struct.unpack_from("<H", boot_sector, 11)[0]
    fs_type_16, fs_type_32 = boot_sector[54:62], boot_sector[82:90]
    return bytes_per_sector in (512, 1024, 2048, 4096) and (
        fs_type_16.startswith(b"FAT") or fs_type_32.startswith(b"FAT"))


def _describe(partitions: list[Partition]) -> str:
    if not partitions:
        return "no partitions"
    return ", ".join(
        f"{p.number}: type {p.type}{f' ({p.label})' if p.label else ''}" for p in partitions)


# --- the shell: reading an image file -------------------------------------------------

_COMPRESSED = {
    b"\xfd7zXZ\x00": "xz (unxz it first)",
    b"\x1f\x8b": "gzip (gunzip it first)",
    b"PK\x03\x04": "a zip archive (unzip it first)",
    b"(\xb5/\xfd": "zstd (unzstd it first)",
}


def read_partitions(image: Path) -> list[Partition]:
    """The partitions of a raw disk image file (MBR, or GPT behind a protective MBR)."""
    try:
        with open(image, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            sector0 = f.read(SECTOR)
            for magic, what in _COMPRESSED.items():
                if sector0.startswith(magic):
                    raise DiskImageError(f"{image} is compressed with {what}")
            try:
                partitions = parse_mbr(sector0)
            except PartitionTableError as exc:
                raise DiskImageError(f"{image} is not a disk image: {exc}") from None
            if any(p.type == f"{GPT_PROTECTIVE:#04x}" for p in partitions):
                f.seek(SECTOR)
                header = parse_gpt_header(f.read(SECTOR))
                f.seek(header.entries_lba * SECTOR)
                partitions = parse_gpt(header, f.read(header.entry_count * header.entry_size))
    except FileNotFoundError:
        raise DiskImageError(f"image {image} does not exist") from None
    except IsADirectoryError:
        raise DiskImageError(f"image {image} is a directory, not a disk image file") from None
    for p in partitions:
        if p.end > size and p.fat:
            raise DiskImageError(
                f"{image} is {size} bytes but partition {p.number} ends at byte {p.end}: "
                "the image is truncated")
    return partitions
