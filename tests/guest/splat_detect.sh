#!/usr/bin/env bash
# disks: 1 64M
# The splat check itself: a guest test whose dmesg holds a kernel warning
# must fail. A child test injects one through /dev/kmsg and must exit 1.
set -u
cat > /tmp/child.sh <<'CHILD'
. tests/guest/lib.sh
echo "<4>WARNING: CPU: 0 PID: 1 at injected/by/splat_detect.c:1 self_test" > /dev/kmsg
finish
CHILD
TEST_NAME=splat_detect_child bash /tmp/child.sh
rc=$?
# The injected warning has served its purpose: it must not fail the tests
# that run after this one in the same guest (tests/guest/batch.sh).
dmesg -C
if [ $rc = 1 ]; then echo "[splat_detect] PASS: injected warning failed the child test"; exit 0; fi
echo "[splat_detect] FAIL: child exited $rc despite a warning in dmesg"; exit 1
