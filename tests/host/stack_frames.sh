#!/usr/bin/env bash
# The module's stack frames against a budget. Kernel stacks are 16 KiB, and
# the load sequence runs on insmod's, under block I/O as deep as
# device-mapper and lockdep make it: frames of 6 KiB in the load path once
# overflowed it (a stack guard page Oops). Every function of raidmig.ko must
# reserve at most FRAME_BUDGET bytes (default 4096), and the load path's
# frames together at most LOAD_BUDGET (default 8192).
#
#   bash tests/host/stack_frames.sh [raidmig.ko]
set -uo pipefail
cd "$(dirname "$0")/../.."
ko=${1:-raidmig.ko}
[ -f "$ko" ] || { echo "no $ko: build the module first"; exit 1; }
objdump -d "$ko" --no-show-raw-insn | python3 -c '
import re, sys
frame_budget, load_budget = 4096, 8192
frames = {}
fn = None
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        fn = m.group(1)
        continue
    m = re.search(r"sub\s+\$0x([0-9a-f]+),%rsp", line)
    if m and fn:
        frames[fn] = max(frames.get(fn, 0), int(m.group(1), 16))
fails = 0
for f, v in sorted(frames.items(), key=lambda x: -x[1]):
    if v > frame_budget:
        print(f"FAIL: {v} bytes > {frame_budget}: {f}")
        fails += 1
def frame(part):
    return max((v for f, v in frames.items() if part in f), default=0)
# Module init -> from_params -> run_load -> lifecycle::load -> assemble or create.
path = [("Module4init", frame("Module4init")), ("run_load", frame("8run_load")),
        ("lifecycle load", frame("lifecycle4load")),
        ("assemble_devices/create", max(frame("16assemble_devices"), frame("lifecycle6create")))]
total = sum(v for _, v in path)
print("load path: " + ", ".join(f"{n} {v}" for n, v in path) + f": {total} bytes")
if total > load_budget:
    print(f"FAIL: load path {total} bytes > {load_budget}")
    fails += 1
print(f"largest frame: {max(frames.values())} bytes")
sys.exit(1 if fails else 0)
'
