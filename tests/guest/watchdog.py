#!/usr/bin/env python3
"""A watchdog for a guest that may stop making progress in memory reclaim.

    watchdog.py SECONDS RESULTS_FILE MESSAGE

Locks itself in memory and opens everything it needs first, so that it still
runs when every allocation in the guest waits for reclaim. If it is not
killed within SECONDS, it appends "MESSAGE" to RESULTS_FILE, asks the kernel
to list its blocked tasks (sysrq w, on the console) and resets the guest
(sysrq b; QEMU runs with -no-reboot, so the guest ends).
"""
import ctypes
import os
import sys
import time

secs, results, message = float(sys.argv[1]), sys.argv[2], sys.argv[3]
out = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
sysrq = os.open('/proc/sysrq-trigger', os.O_WRONLY)
line = (message + '\n').encode()
libc = ctypes.CDLL(None, use_errno=True)
libc.mlockall(3)   # MCL_CURRENT | MCL_FUTURE
time.sleep(secs)
os.write(out, line)
os.fsync(out)
os.write(2, line)
os.write(sysrq, b'w')
time.sleep(2)
os.write(sysrq, b'b')
