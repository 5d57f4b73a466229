#!/usr/bin/env python3
"""Edits one field of a raidmig superblock slot in place and re-seals its
CRC32C, so that tests can make members disagree (see src/core/format.rs for
the layout). Refuses a slot whose checksum does not verify before the edit.

    sbedit.py DEVICE SLOT OFFSET SIZE VALUE
"""
import os
import struct
import subprocess
import sys

# The reserved tail's size, from its one definition (src/core/layout.rs).
TAIL_SECTORS = int(subprocess.run(
    ["bash", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts/reserved-tail.sh")],
    check=True, capture_output=True, text=True).stdout)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def main():
    dev, slot, offset, size, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0), int(sys.argv[4]), int(sys.argv[5], 0)
    fd = os.open(dev, os.O_RDWR | os.O_SYNC)
    sectors = os.lseek(fd, 0, os.SEEK_END) // 512
    pos = (sectors - TAIL_SECTORS + 8 * slot) * 512
    sb = bytearray(os.pread(fd, 4096, pos))
    if sb[:8] != b"RAIDMIGS":
        sys.exit(f"{dev} slot {slot}: no raidmig superblock")
    if struct.unpack_from("<I", sb, 4092)[0] != crc32c(sb[:4092]):
        sys.exit(f"{dev} slot {slot}: checksum does not verify before the edit")
    sb[offset:offset + size] = value.to_bytes(size, "little")
    struct.pack_into("<I", sb, 4092, crc32c(sb[:4092]))
    os.pwrite(fd, bytes(sb), pos)
    os.close(fd)


main()
