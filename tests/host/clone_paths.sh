#!/usr/bin/env bash
# A checkout anywhere runs guests: for each of /var/tmp, /tmp, /root and /srv,
# a copy of this working tree (without target/ and .git, with the built
# raidmig.ko) in a fresh directory there runs scripts/guest.sh, and the guest
# must see the copy's module and test library at the copy's path. virtme-ng
# gives the guest fresh tmpfs on /tmp and /var/tmp, so a checkout there is
# only visible when scripts/guest.sh shares it explicitly.
#
#   tests/host/clone_paths.sh [PARENT...]     (default: /var/tmp /tmp /root /srv)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$top/raidmig.ko" ] || { echo "FAIL: no $top/raidmig.ko (build the module first)"; exit 1; }
[ $# -gt 0 ] || set -- /var/tmp /tmp /root /srv
unset RAIDMIG_KO
failures=0
for parent in "$@"; do
  mkdir -p "$parent"
  copy=$(mktemp -d "$parent/raidmig-clone.XXXXXX")
  out=$(mktemp -d /var/tmp/raidmig-clone-out.XXXXXX)
  tar -C "$top" --exclude=./target --exclude=./.git -cf - . | tar -C "$copy" -xf -
  t0=$SECONDS
  log=$(cd "$copy" && RAIDMIG_OUT=$out bash scripts/guest.sh --disks 1 --size 64M -- \
          bash -c 'test -r raidmig.ko && test -r tests/guest/lib.sh && echo visible' 2>&1)
  rc=$?
  if [ $rc = 0 ] && grep -qx visible <<<"$(tr -d '\r' <<<"$log")"; then
    echo "ok: checkout in $parent ($copy) visible in the guest ($((SECONDS - t0)) s)"
  else
    echo "FAIL: checkout in $parent ($copy): exit $rc, 'visible' $(grep -q visible <<<"$log" && echo printed || echo missing) ($((SECONDS - t0)) s); guest output:"
    tail -n 20 <<<"$log" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
  rm -rf "$copy" "$out"
done
[ $failures = 0 ] && { echo PASS; exit 0; }
echo "FAILED ($failures)"; exit 1
