"""Partition tables: bytes in, partitions out (edge.disk), and reading them from image files."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest

from edge.disk import (
    DiskImageError,
    PartitionTableError,
    find_boot_partition,
    looks_like_fat,
    parse_gpt,
    parse_gpt_header,
    parse_mbr,
    read_partitions,
)
from tests.edge.diskimages import ESP, FAT32_LBA, LINUX, LINUX_FS, MiB, gpt, make_image, mbr


def test_mbr_of_a_raspberry_pi_os_image() -> None:
    # Raspberry Pi OS: FAT32 (LBA) boot at sector 8192, ext4 root after it.
    parts = parse_mbr(mbr([(FAT32_LBA, 8192, 1048576), (LINUX, 1056768, 4194304)]))
    boot, root = parts
    assert (boot.number, boot.type, boot.offset, boot.size, boot.fat) == (
        1, "0x0c", 8192 * 512, 512 * MiB, True)
    assert (root.number, root.type, root.offset, root.fat) == (2, "0x83", 1056768 * 512, False)
    assert find_boot_partition(parts) == boot


def test_mbr_empty_slots_are_left_out_and_numbers_kept() -> None:
    sector = bytearray(mbr([(LINUX, 2048, 100), (0, 0, 0), (0x0E, 4096, 200)], bootable=3))
    parts = parse_mbr(bytes(sector))
    assert [(p.number, p.type, p.bootable) for p in parts] == [(1, "0x83", False), (3, "0x0e", True)]
    assert find_boot_partition(parts).number == 3


@pytest.mark.parametrize("ptype", [0x0B, 0x0C, 0x0E, 0x06])
def test_every_fat_type_is_a_boot_candidate(ptype: int) -> None:
    (p,) = parse_mbr(mbr([(ptype, 2048, 2048)]))
    assert p.fat


def test_no_signature_is_not_a_partition_table() -> None:
    with pytest.raises(PartitionTableError, match="0x55AA"):
        parse_mbr(bytes(512))


def test_random_bytes_with_a_signature_are_not_a_partition_table() -> None:
    sector = bytearray(b"\x42" * 512)
    sector[510:512] = b"\x55\xaa"
    with pytest.raises(PartitionTableError, match="status byte"):
        parse_mbr(bytes(sector))


def test_short_input_is_refused() -> None:
    with pytest.raises(PartitionTableError, match="512 bytes"):
        parse_mbr(b"\x55\xaa")


def test_no_fat_partition_names_what_there_is() -> None:
    parts = parse_mbr(mbr([(LINUX, 2048, 4096), (0x82, 8192, 4096)]))
    with pytest.raises(DiskImageError, match=r"no FAT boot partition.*1: type 0x83.*2: type 0x82"):
        find_boot_partition(parts)


def test_explicit_partition_number() -> None:
    parts = parse_mbr(mbr([(FAT32_LBA, 2048, 4096), (FAT32_LBA, 8192, 4096)]))
    assert find_boot_partition(parts, 2).offset == 8192 * 512
    with pytest.raises(DiskImageError, match="no partition 4"):
        find_boot_partition(parts, 4)


def test_gpt_with_an_efi_system_partition() -> None:
    table = gpt([(ESP, 2048, 133119, "boot"), (LINUX_FS, 133120, 262110, "root")], 262144)
    (protective,) = parse_mbr(table[:512])
    assert protective.type == "0xee"
    header = parse_gpt_header(table[512:1024])
    parts = parse_gpt(header, table[1024:])
    assert [(p.number, p.label, p.fat, p.offset, p.size) for p in parts] == [
        (1, "boot", True, 2048 * 512, 131072 * 512),
        (2, "root", False, 133120 * 512, (262110 - 133120 + 1) * 512)]
    assert parts[1].type == str(LINUX_FS)


def test_gpt_corruption_is_detected() -> None:
    table = bytearray(gpt([(ESP, 2048, 4095, "boot")], 8192))
    header = parse_gpt_header(bytes(table[512:1024]))
    table[1024 + 40] ^= 0xFF  # flip a bit of entry 1's first LBA
    with pytest.raises(PartitionTableError, match="entry array CRC"):
        parse_gpt(header, bytes(table[1024:]))
    table[512 + 40] ^= 0xFF  # and one of the header
    with pytest.raises(PartitionTableError, match="header CRC"):
        parse_gpt_header(bytes(table[512:1024]))


def test_fat_boot_sector_is_recognised() -> None:
    sector = bytearray(512)
    sector[11:13] = struct.pack("<H", 512)
    sector[82:90] = b"FAT32   "
    sector[510:512] = b"\x55\xaa"
    assert looks_like_fat(bytes(sector))
    assert not looks_like_fat(bytes(512))
    sector[82:90] = b"EXT4    "
    assert not looks_like_fat(bytes(sector))


# --- the file shell --------------------------------------------------------------------


def test_read_partitions_of_an_image_file(tmp_path: Path) -> None:
    image = tmp_path / "pi.img"
    offset = make_image(image, fat=False)
    boot = find_boot_partition(read_partitions(image))
    assert (boot.number, boot.offset) == (1, offset)


def test_read_partitions_of_a_gpt_image_file(tmp_path: Path) -> None:
    image = tmp_path / "gpt.img"
    sectors = 16 * MiB // 512
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
        f.write(gpt([(LINUX_FS, 34, 2047, "bios"), (ESP, 2048, 20479, "EFI")], sectors))
    boot = find_boot_partition(read_partitions(image))
    assert (boot.number, boot.label, boot.offset) == (2, "EFI", 2048 * 512)


def test_a_missing_image_is_named(tmp_path: Path) -> None:
    with pytest.raises(DiskImageError, match=r"image .*nope\.img does not exist"):
        read_partitions(tmp_path / "nope.img")


def test_a_compressed_image_says_to_decompress_it(tmp_path: Path) -> None:
    image = tmp_path / "raspios.img.xz"
    image.write_bytes(lzma.compress(mbr([(FAT32_LBA, 2048, 4096)])))
    with pytest.raises(DiskImageError, match="unxz it first"):
        read_partitions(image)


def test_a_truncated_image_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "short.img"
    image.write_bytes(mbr([(FAT32_LBA, 2048, 4096)]) + bytes(MiB))
    with pytest.raises(DiskImageError, match="truncated"):
        read_partitions(image)


def test_a_random_file_is_not_a_disk_image(tmp_path: Path) -> None:
    image = tmp_path / "notes.txt"
    image.write_text("hello\n" * 200)
    with pytest.raises(DiskImageError, match="not a disk image"):
        read_partitions(image)

