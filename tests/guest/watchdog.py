#!/usr/bin/env python3
"""A watchdog for a guest that may stop making progress in memory reclaim.

    watchdog.py SECONDS RESULTS_FILE MESSAGE

Locks itself in memory and opens everything it needs first, so that it still
runs when every allocation in the guest waits for reclaim. If it is not
killed within SECONDS, it appends "MESSAGE" to RESULTS_FILE, asks the kernel
to list its blocked tasks (sysrq w, on the console) and resets the guest
(sysrq b; QEMU runs with -no-reboot, so the guest ends). Meanwhile, at the
first hung task the kernel reports, it asks for the list of blocked tasks
once (the hung-task report shows only tasks that did not run for the whole
timeout, not the holders they wait for, which may wake now and then).
"""
import ctypes
import os
import select
import sys
import time

secs, results, message = float(sys.argv[1]), sys.argv[2], sys.argv[3]
out = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
sysrq = os.open('/proc/sysrq-trigger', os.O_WRONLY)
line = (message + '\n').encode()
libc = ctypes.CDLL(None, use_errno=True)
kmsg = os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK)
os.lseek(kmsg, 0, os.SEEK_END)
libc.mlockall(3)   # MCL_CURRENT | MCL_FUTURE
deadline = time.monotonic() + secs
listed = False
while (left := deadline - time.monotonic()) > 0:
    ready, _, _ = select.select([kmsg], [], [], min(left, 1.0))
    if not ready:
        continue
    try:
        record = os.read(kmsg, 8192)
    except BlockingIOError:
        continue
    except OSError:   # EPIPE: records overwritten before being read
        continue
    if not listed and b'blocked for more than' in record:
        listed = True
        os.write(sysrq, b'w')
os.write(out, line)
os.fsync(out)
os.write(2, line)
os.write(sysrq, b'w')
time.sleep(2)
os.write(sysrq, b'b')
