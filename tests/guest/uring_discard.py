#!/usr/bin/env python3
"""Submits several discards of a block device at once, through io_uring.

    uring_discard.py DEV OFFSET:LENGTH...      (bytes)

Each range becomes one BLOCK_URING_CMD_DISCARD command; all of them go to the
kernel in one io_uring_enter() call, which submits them under one block plug,
so that the block layer may merge discards of ranges that are not contiguous
into one request (on queues with max_discard_segments > 1). Prints each
command's result; exits 1 if any failed.
"""
import ctypes
import mmap
import os
import struct
import sys

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_ENTER_GETEVENTS = 1
IORING_OP_URING_CMD = 46
BLOCK_URING_CMD_DISCARD = 0x12 << 8   # _IO(0x12, 0)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(*args):
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def main():
    dev = sys.argv[1]
    ranges = [tuple(int(x) for x in a.split(':')) for a in sys.argv[2:]]
    n = len(ranges)
    entries = 1
    while entries < n:
        entries *= 2

    params = ctypes.create_string_buffer(120)
    ring_fd = syscall(SYS_IO_URING_SETUP, entries, ctypes.addressof(params))
    p = struct.unpack_from('<10I', params, 0)
    sq_entries, cq_entries = p[0], p[1]
    sq_off = struct.unpack_from('<8IQ', params, 40)
    cq_off = struct.unpack_from('<8IQ', params, 80)
    sq_len = sq_off[6] + sq_entries * 4
    cq_len = cq_off[5] + cq_entries * 16
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    sq = mmap.mmap(ring_fd, sq_len, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQ_RING)
    cq = mmap.mmap(ring_fd, cq_len, mmap.MAP_SHARED, prot, offset=IORING_OFF_CQ_RING)
    sqes = mmap.mmap(ring_fd, sq_entries * 64, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQES)

    fd = os.open(dev, os.O_RDWR)
    sq_mask = struct.unpack_from('<I', sq, sq_off[2])[0]
    tail = struct.unpack_from('<I', sq, sq_off[1])[0]
    for i, (off, length) in enumerate(ranges):
        idx = (tail + i) & sq_mask
        sqe = bytearray(64)
        struct.pack_into('<BBHi', sqe, 0, IORING_OP_URING_CMD, 0, 0, fd)
        struct.pack_into('<II', sqe, 8, BLOCK_URING_CMD_DISCARD, 0)   # cmd_op, pad
        struct.pack_into('<Q', sqe, 16, off)                          # addr: start
        struct.pack_into('<Q', sqe, 32, i)                            # user_data
        struct.pack_into('<Q', sqe, 48, length)                       # addr3: length
        sqes[idx * 64:(idx + 1) * 64] = bytes(sqe)
        struct.pack_into('<I', sq, sq_off[6] + idx * 4, idx)          # array
    struct.pack_into('<I', sq, sq_off[1], tail + n)
    submitted = syscall(SYS_IO_URING_ENTER, ring_fd, n, n, IORING_ENTER_GETEVENTS, 0, 0)

    cq_mask = struct.unpack_from('<I', cq, cq_off[2])[0]
    head = struct.unpack_from('<I', cq, cq_off[0])[0]
    results = {}
    while len(results) < n:
        ctail = struct.unpack_from('<I', cq, cq_off[1])[0]
        if head == ctail:
            syscall(SYS_IO_URING_ENTER, ring_fd, 0, 1, IORING_ENTER_GETEVENTS, 0, 0)
            continue
        user_data, res, _flags = struct.unpack_from('<QiI', cq, cq_off[5] + (head & cq_mask) * 16)
        results[user_data] = res
        head += 1
        struct.pack_into('<I', cq, cq_off[0], head)
    failed = 0
    print(f'submitted {submitted} discards in one call')
    for i, (off, length) in enumerate(ranges):
        res = results[i]
        if res < 0:
            failed += 1
        print(f'discard {off}+{length}: {"ok" if res >= 0 else os.strerror(-res)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
