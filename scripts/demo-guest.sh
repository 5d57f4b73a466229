#!/usr/bin/env bash
# Runs inside the demo guest (see demo.sh).
set -euo pipefail
step() { echo; echo "### $*"; }

step "insmod raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64"
insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64
for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
dmesg | grep raidmig
lsblk /dev/raidmig0 /dev/sda /dev/sdb /dev/sdc

step "mkfs.ext4 /dev/raidmig0 and write files"
mkfs.ext4 -q -F /dev/raidmig0
mkdir -p /tmp/vol && mount /dev/raidmig0 /tmp/vol
for i in 1 2 3 4 5; do head -c $((i * 7))M /dev/urandom > /tmp/vol/file$i; done
cp -r /usr/share/doc/fio /tmp/vol/doc
(cd /tmp/vol && find . -type f -print0 | sort -z | xargs -0 sha256sum) > /tmp/sums
df -h /tmp/vol
umount /tmp/vol

step "rmmod, insmod again, and read the files back"
rmmod raidmig
insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid0 chunk_kb=64
for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
mount /dev/raidmig0 /tmp/vol
(cd /tmp/vol && sha256sum --quiet -c /tmp/sums) && echo "all $(wc -l < /tmp/sums) files read back intact"
umount /tmp/vol
e2fsck -fn /dev/raidmig0
rmmod raidmig
echo; echo "demo done"
