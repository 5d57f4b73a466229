#!/usr/bin/env python3
"""Prints the entries of a dm-log-writes log device, one per line:
"SECTOR NR_SECTORS FLAGS" with FLAGS among FLUSH FUA DISCARD MARK META;
with a second argument, only the entries after the mark of that name.
Format: drivers/md/dm-log-writes.c (super in the first sector, then each
entry's header sector followed by its data sectors)."""
import struct
import sys

MAGIC = 0x6a736677736872
NAMES = [(1, "FLUSH"), (2, "FUA"), (4, "DISCARD"), (8, "MARK"), (16, "META")]

with open(sys.argv[1], "rb") as dev:
    magic, version, nr_entries, sectorsize = struct.unpack("<QQQI", dev.read(28))
    if magic != MAGIC:
        sys.exit("not a dm-log-writes log")
    pos = sectorsize
    printing = len(sys.argv) < 3
    for _ in range(nr_entries):
        dev.seek(pos)
        sector, nr, flags, data_len = struct.unpack("<QQQQ", dev.read(32))
        names = [n for bit, n in NAMES if flags & bit] or ["-"]
        if printing:
            print(sector, nr, ",".join(names))
        elif flags & 8 and dev.read(data_len).rstrip(b"\0").decode() == sys.argv[2]:
            printing = True
        pos += sectorsize
        if not flags & 4:
            pos += nr * sectorsize
