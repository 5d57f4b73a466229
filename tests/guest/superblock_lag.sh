#!/usr/bin/env bash
# disks: 2 128M
# A member whose superblock lags must be brought level at assembly. raid1
# over the first disk and the second behind a device-mapper table: a
# throttled migration writes a few superblock generations, then is paused
# and unloaded. The second member's newest slot (generation g) is zeroed, as
# if a power cut had lost that write: it lags by one (g-1), which assembly
# tolerates. If that load does not rewrite the lagging member, a second lost
# write (the member's next superblock slot gives I/O errors) leaves it two
# behind, and the next assembly refuses it as stale. Expected: the load after
# the second failure assembles (degraded: a member whose superblock write
# fails is failed, as md does), the migration finishes once the member is
# added back and rebuilt, and the volume holds the first disk's original
# data.
. tests/guest/lib.sh

d0=${DISKS[0]} d1=${DISKS[1]}
data=$(data_area $d0)
sz1=$(blockdev --getsz $d1)
tail1=$((sz1 - RESERVED_TAIL))

gen() {   # gen DEV SLOT: the generation in DEV's slot SLOT
  dd if="$1" bs=512 skip=$(( $(blockdev --getsz "$1") - RESERVED_TAIL + 8 * $2 )) count=1 iflag=direct 2>/dev/null |
    od -An -tu8 -j16 -N8 | tr -d ' '
}
gens() { echo "$(gen $1 0)/$(gen $1 1)"; }
newest() { local a b; a=$(gen $1 0) b=$(gen $1 1); echo $(( ${a:-0} > ${b:-0} ? ${a:-0} : ${b:-0} )); }

must random_fill $d0 $((data / 2048))M
want=$(head -c $((data * 512)) $d0 | md5sum)
must dmsetup create lag --table "0 $sz1 linear $d1 0"

must load members=$d0,/dev/mapper/lag level=raid1 checkpoint_ms=200
must wait_dev
echo 4096 > $SYS/speed_limit_max_kbps
echo start > $SYS/action
sleep 3
echo pause > $SYS/action
sleep 1
say "migration paused: state $(cat $SYS/state), progress $(cat $SYS/progress), $(cat $SYS/checkpoint_writes) checkpoint writes"
must unload
g=$(newest /dev/mapper/lag)
say "generations (slot 0/slot 1): $d0 $(gens $d0), lag $(gens /dev/mapper/lag); newest g=$g"
check "superblocks written (g=$g)" test "$g" -ge 2

# A lost write: the member's slot holding g is zeroed; its newest is g-1.
must dd if=/dev/zero of=/dev/mapper/lag bs=4096 count=1 seek=$(( (tail1 + 8 * (g % 2)) / 8 )) oflag=direct conv=notrunc status=none
say "slot $((g % 2)) of the member zeroed: lag $(gens /dev/mapper/lag)"

mark=$(dmesg | wc -l)
if load members=$d0,/dev/mapper/lag checkpoint_ms=200; then
  ok "assembled with a member one generation behind"
else
  fail "load with a member one generation behind refused: $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"
  finish
fi
must wait_dev
say "assembled: state $(cat $SYS/state); generations $d0 $(gens $d0), lag $(gens /dev/mapper/lag)"
# The next superblock update goes to slot (next % 2); it fails on the member.
next=$(( $(newest $d0) + 1 ))
bad=$((tail1 + 8 * (next % 2)))
say "next generation $next: slot $((next % 2)) of the member (sectors $bad..$((bad + 8))) gives I/O errors"
must dmsetup suspend lag
must dmsetup load lag <<EOT
0 $bad linear $d1 0
$bad 8 error
$((bad + 8)) $((sz1 - bad - 8)) linear $d1 $((bad + 8))
EOT
must dmsetup resume lag
echo resume > $SYS/action
for _ in $(seq 1 30); do case "$(cat $SYS/state)" in failed|degraded) break ;; esac; sleep 1; done
say "after resume: state $(cat $SYS/state), progress $(cat $SYS/progress); dmesg: $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"
unload_within 60 || finish
must dmsetup load lag --table "0 $sz1 linear $d1 0"
must dmsetup resume lag
say "generations now: $d0 $(gens $d0), lag $(gens /dev/mapper/lag)"

mark=$(dmesg | wc -l)
if out=$(insmod "$KO" members=$d0,/dev/mapper/lag 2>&1); then
  ok "assembled after the second lost superblock write"
  must wait_dev
  # The lost write failed the member (md fails a member whose superblock
  # write fails), recorded in the other's superblock: it was left out, and
  # the migration waits for it to be rebuilt. The disk is fine again: added
  # back, it is rebuilt over the migrated part and the migration resumes.
  check "degraded without the member that lost a write ($(cat $SYS/state))" test "$(cat $SYS/state)" = degraded
  must bash -c "echo /dev/mapper/lag > $SYS/add"
  check "migration finished" wait_state clean 300
  check "volume holds the first disk's original data" test "$(head -c $((data * 512)) /dev/raidmig0 | md5sum)" = "$want"
  must unload
else
  fail "assembly after the second lost write refused: insmod: $out; dmesg: $(dmesg | tail -n +$((mark + 1)) | grep raidmig | tr '\n' '|')"
fi
dmsetup remove lag
finish
