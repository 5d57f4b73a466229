#!/usr/bin/env bash
# Runs inside the demo guest (see demo.sh): a plain disk with ext4 and files,
# in use, becomes raid5 over itself and two new disks, on line.
set -euo pipefail
exec 2>&1
step() { echo; echo "### $*"; }
SYS=/sys/block/raidmig0/raidmig
MNT=/tmp/vol
mkdir -p $MNT

step "The user's disk /dev/sda: ext4 with files (its last 16 MiB left free for raidmig)"
tail_sectors=$(bash "$(dirname "$0")/reserved-tail.sh")   # 16 MiB
data=$(( ($(blockdev --getsz /dev/sda) - tail_sectors) / 128 * 128 ))
mkfs.ext4 -q -F -E nodiscard -b 4096 /dev/sda $((data / 8))
mount /dev/sda $MNT
for i in 1 2 3 4 5; do head -c $((i * 7))M /dev/urandom > $MNT/file$i; done
cp -r /usr/share/doc/fio $MNT/doc
(cd $MNT && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum) > /tmp/sums
df -h $MNT
umount $MNT

step "insmod raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid5"
insmod ./raidmig.ko members=/dev/sda,/dev/sdb,/dev/sdc level=raid5
for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
dmesg | grep raidmig: | tail -3
lsblk /dev/raidmig0 /dev/sda /dev/sdb /dev/sdc
show() { for a in state level source_level progress checkpoint units_done units_staged checkpoint_writes speed_kbps; do printf '%s=%s ' $a "$(cat $SYS/$a)"; done; echo; }
show

step "Mount /dev/raidmig0: the same files, before any migration"
mount /dev/raidmig0 $MNT
(cd $MNT && sha256sum --quiet -c /tmp/sums) && echo "all $(wc -l < /tmp/sums) files intact"

step "echo start > $SYS/action, while files are written to the volume"
( i=0; while [ ! -e /tmp/stop ]; do head -c 256K /dev/urandom > $MNT/new$i || break; i=$((i + 1)); sleep 0.5; done ) &
writer=$!
echo start > $SYS/action
# The migration thread takes the command up asynchronously.
while [ "$(cat $SYS/state)" = prepared ]; do sleep 0.1; done
while [ "$(cat $SYS/state)" = migrating ]; do show; sleep 3; done
touch /tmp/stop; wait $writer || true
show
[ "$(cat $SYS/state)" = clean ]

step "The volume grew to the raid5 capacity: resize2fs follows"
blockdev --getsize64 /dev/raidmig0
resize2fs /dev/raidmig0
df -h $MNT
(cd $MNT && sha256sum --quiet -c /tmp/sums) && echo "all $(wc -l < /tmp/sums) files intact, $(ls $MNT | grep -c '^new') files written during the migration"
umount $MNT
e2fsck -fn /dev/raidmig0

step "rmmod; insmod with members only (any order) assembles the raid5 from its superblocks"
rmmod raidmig
insmod ./raidmig.ko members=/dev/sdc,/dev/sda,/dev/sdb
for i in $(seq 50); do [ -b /dev/raidmig0 ] && break; sleep 0.1; done
show
mount /dev/raidmig0 $MNT
(cd $MNT && sha256sum --quiet -c /tmp/sums) && echo "all $(wc -l < /tmp/sums) files read back intact"
umount $MNT
rmmod raidmig
echo; echo "demo done"
